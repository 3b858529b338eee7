"""Corpora with known events, for the benchmark and the clustering tests. Seeded: the same
arguments give the same corpus.

- `synthetic_corpus`: pseudo-word events over a Zipf-like vocabulary of everyday news words,
  for the end-to-end benchmark (many events, cheap to make at any size).
- `same_kind_day`: a day of many events of few kinds (several earthquakes, several fraud trials
  ...). Each outlet tells every event of a kind with its own template, so two events of one kind
  from one outlet share every word but their names, places and numbers: what tells events
  apart is who, where and how many, not the topic.
- `big_event_day`: one event of 500 articles over 24 hours, told from many angles (warnings,
  outages, floods in one town or another, the clean-up), among a same-kind day of small events.

Each comes in the forms a feed gives (`FORMS`): title and one-sentence summary; title only;
lowercased without punctuation; full article (byline, body, newsletter and photo-credit
boilerplate) with no summary.
"""

import random
import re
from datetime import datetime, timedelta
from pathlib import Path

# The bundled sample: 164 real-looking articles about 40 events of one day, labeled. Package
# data, so that an installed storyapp (not only a checkout) has it for the demo.
SAMPLE = Path(__file__).resolve().parent / "sample" / "articles.jsonl"

CONSONANTS = "bcdfghklmnprstvz"
VOWELS = "aeiou"
# Everyday news vocabulary, shared by all events. Drawn with Zipf-like weights, so a few words
# appear in many articles and most in few, which is what makes similarity matrices sparse or not.
COMMON = (
    "officials announced report week government police residents company statement minister "
    "council city region country market prices workers families hospital school court judge "
    "investigation plans budget talks agreement deal support funding project services public "
    "local national international leaders spokesperson department agency board members group "
    "community security emergency crews damage roads homes power water weather season record "
    "growth shares investors profits sales customers data systems network users technology "
    "research scientists study results patients health care doctors staff union strike pay "
    "election vote campaign party candidates results count parliament law rules policy tax "
    "energy prices fuel costs climate environment river coast storm rain flood fire match team "
    "players coach season league final goal win loss fans stadium festival film music artists "
    "museum exhibition visitors tourism travel airport flights rail trains bus traffic bridge"
).split()


def pseudo_word(rng: random.Random) -> str:
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(3)).capitalize()


def synthetic_corpus(
    events: int,
    *,
    now: datetime,
    seed: int = 7,
    articles_per_event: tuple[int, ...] = (2, 3, 3, 4, 5),
    singles: int = 0,
    hours: float = 22.0,
) -> list[dict]:
    """`events` events of several articles each, plus `singles` one-article events; every
    article published within the last `hours` hours before `now`."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(COMMON))]
    records = []
    sizes = [rng.choice(articles_per_event) for _ in range(events)] + [1] * singles
    for event, size in enumerate(sizes):
        names = [pseudo_word(rng) for _ in range(6)]
        start = now - timedelta(hours=rng.uniform(1.0, hours))
        for n in range(size):
            # Headlines are mostly the event's own names; summaries mix in everyday words.
            title = rng.sample(names, 4) + rng.choices(COMMON, weights, k=3)
            summary = rng.sample(names, 5) + rng.choices(COMMON, weights, k=12)
            body = [
                " ".join(rng.sample(names, 2) + rng.choices(COMMON, weights, k=10)) + "."
                for _ in range(8)
            ]
            records.append(
                {
                    "url": f"https://bench.example/{seed}/{event}/{n}",
                    "title": " ".join(rng.sample(title, len(title))).capitalize(),
                    "summary": " ".join(rng.sample(summary, len(summary))).capitalize() + ".",
                    "content": " ".join(body),
                    "source": f"Source {rng.randrange(12)}",
                    "published_at": (start + timedelta(minutes=40 * n)).isoformat() + "Z",
                    "event": f"event-{event}",
                }
            )
    return records


FORMS = ("summary", "title", "lower", "full")

OUTLETS = (
    ("Daily Courier", "dailycourier.example"),
    ("The Morning Ledger", "ledger.example"),
    ("Wire Service", "wire.example"),
    ("Metro Post", "metropost.example"),
    ("Evening Times", "eveningtimes.example"),
    ("Global Herald", "globalherald.example"),
    ("Citizen Review", "citizenreview.example"),
    ("News Network 24", "nn24.example"),
)
FIRST_NAMES = (
    "Maria James Ahmed Chen Olga Pedro Fatima Lars Ingrid Tomas Amara Kenji Sofia Daniel Leila "
    "Viktor Nadia Oscar Priya Hugo Elena Marcus Aisha Felix Rosa Ivan Mei Carlos Zainab Peter "
    "Hana Luca Grace Omar Clara Anton Yusuf Irene Mateo Beatriz Samuel Noor Emil Julia Rafael"
).split()
TOWN_HEADS = (
    "Ash Bel Cal Dun El Fair Glen Har Kil Lan Mar Nor Oak Pen Red Stan Thorn Wes Wil Ald Brom "
    "Cran Dor Eg Fen Gil Hol Ives Kel Lud Mel Ny Orm Pol Rav Sel Tam Ul Ven Wyn"
).split()
TOWN_TAILS = "ford mont bury dale ham wick stead ton field port mere bridge haven ley brook".split()
ORG_WORDS = (
    "Harlow Meridian Northgate Pinecrest Crestline Oakridge Silverline Bluewater Ironwood "
    "Redfield Stonebridge Westbrook Goldcrest Summit Brightwater Evergreen Falcon Granite"
).split()
REGIONS = (
    "Valdoria Kestria Morland Altavia Brenmark Corvania Dalmeria Estovia Farland Gostria "
    "Halvania Istria Jorvik Karelia Lusovia Marovia"
).split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
PRODUCTS = "e-bikes scooters laptops heaters phones chargers kettles drones".split()

# Per kind, one (title, summary) template per outlet style; the facts in braces are the event's.
KINDS: dict[str, tuple[tuple[str, str], ...]] = {
    "earthquake": (
        (
            "A magnitude {mag} earthquake strikes {town}, killing {n}",
            "A magnitude {mag} earthquake struck near {town} in {region} on {day}, killing at "
            "least {n} people and damaging hundreds of homes, officials said.",
        ),
        (
            "{town} quake: death toll rises to {n} as rescuers search rubble",
            "Rescue teams in {town} were searching collapsed buildings after the {mag} quake; "
            "{official}, the regional governor, said {n} people had died.",
        ),
        (
            "Earthquake in {region} leaves {n} dead in {town}",
            "The {mag}-magnitude tremor hit {town} early on {day}. Governor {official} "
            "declared a state of emergency and asked {org} to send engineers.",
        ),
        (
            "{official} visits {town} after deadly {mag} earthquake",
            "Governor {official} toured the damaged centre of {town}, where the earthquake "
            "killed {n} people; {org} said aftershocks could continue for days.",
        ),
    ),
    "trial": (
        (
            "{person} goes on trial in {town} over {org} fraud",
            "The trial of {person}, former finance chief of {org}, opened in {town} on {day}; "
            "prosecutors say {last} hid losses of {n} million.",
        ),
        (
            "Prosecutors accuse {last} of hiding {n} million at {org}",
            "In court in {town}, prosecutors said {person} moved {n} million out of {org} "
            "accounts; judge {official} will hear witnesses for three weeks.",
        ),
        (
            "Former {org} executive {person} denies fraud charges",
            "{person} pleaded not guilty in {town} to charges of fraud at {org}. Judge "
            "{official} set the next hearing for next month.",
        ),
        (
            "Judge {official} opens {org} fraud case against {last}",
            "The case against {person} began before judge {official} in {town}; {org} "
            "shareholders lost an estimated {n} million.",
        ),
    ),
    "storm": (
        (
            "Storm {storm} batters {town} with winds of {mag}0 km/h",
            "Storm {storm} hit {town} and the {region} coast on {day}, cutting power to {n} "
            "thousand homes, {org} said.",
        ),
        (
            "{n} thousand without power as storm {storm} hits {region}",
            "Winds of up to {mag}0 km/h brought down trees across {town}; {org} crews were "
            "working to restore power, mayor {official} said.",
        ),
        (
            "Storm {storm}: flooding in {town}, schools closed",
            "Mayor {official} closed schools in {town} as storm {storm} flooded roads; {org} "
            "reported {n} thousand customers without electricity.",
        ),
        (
            "Mayor {official} warns {town} residents as storm {storm} arrives",
            "Residents of {town} were told to stay indoors as storm {storm} brought heavy "
            "rain to {region}; {org} said {n} thousand homes lost power.",
        ),
    ),
    "election": (
        (
            "{person} wins {town} mayoral election",
            "{person} of the {org} won the mayoral election in {town} with {n} percent of the "
            "vote, beating {official}.",
        ),
        (
            "{last} defeats {official} in {town} vote",
            "Voters in {town} chose {person} as mayor on {day}; the {org} candidate took {n} "
            "percent, turnout was low.",
        ),
        (
            "{org} candidate {last} takes {town} with {n} percent",
            "{person} will become mayor of {town} after taking {n} percent of the vote; rival "
            "{official} conceded on {day} night.",
        ),
        (
            "{town} elects {person} as new mayor",
            "The {org} celebrated as {person} won in {town}; {official} conceded and "
            "congratulated {last} on {day}.",
        ),
    ),
    "merger": (
        (
            "{org} to buy {org2} for {n} billion",
            "{org} agreed to acquire {org2} for {n} billion in cash, the companies said on "
            "{day}; chief executive {person} called it a perfect fit.",
        ),
        (
            "{org2} shares jump {mag}0 percent on {org} takeover",
            "Shares of {org2} rose {mag}0 percent after {org} offered {n} billion for the "
            "company; {person} will lead the combined group.",
        ),
        (
            "{person}'s {org} agrees {n} billion deal for {org2}",
            "The {n} billion acquisition of {org2} by {org} needs approval from regulators in "
            "{region}, {last} told analysts.",
        ),
        (
            "{org} and {org2} announce {n} billion merger",
            "{org} will pay {n} billion for {org2}, creating one of the largest groups in "
            "{region}, chief executive {person} said on {day}.",
        ),
    ),
    "fire": (
        (
            "Fire destroys {org} warehouse in {town}",
            "A fire destroyed a warehouse of {org} in {town} on {day}; {n} firefighters "
            "fought the blaze for hours, fire chief {official} said.",
        ),
        (
            "{n} firefighters battle blaze at {town} warehouse",
            "Fire chief {official} said crews brought the fire at the {org} warehouse in "
            "{town} under control by {day} evening; no one was hurt.",
        ),
        (
            "Huge fire at {org} site in {town}; cause unknown",
            "Smoke rose over {town} as fire swept through the {org} warehouse; {official} "
            "said {n} firefighters were sent and an investigation would follow.",
        ),
        (
            "{town} warehouse fire: {org} counts the damage",
            "{org} said the fire in {town} destroyed stock worth millions; fire chief "
            "{official} praised the {n} firefighters at the scene.",
        ),
    ),
    "strike": (
        (
            "{org} workers in {town} walk out over pay",
            "About {n} hundred workers at the {org} plant in {town} went on strike on {day}, "
            "union leader {person} said, demanding a {mag} percent raise.",
        ),
        (
            "Strike halts {org} plant as {last} demands {mag} percent raise",
            "Production at {org} in {town} stopped after union leader {person} called a "
            "strike; {n} hundred workers joined the picket lines.",
        ),
        (
            "{n} hundred strike at {org} in {town}",
            "Union leader {person} said the strike at {org} would last until managers offered "
            "a {mag} percent raise; {official} urged talks.",
        ),
        (
            "Talks fail as {org} strike in {town} enters second day",
            "{person} and {org} managers failed to agree on {day}; {n} hundred workers "
            "remained on strike in {town}, mediator {official} said.",
        ),
    ),
    "crash": (
        (
            "Train derails near {town}, {n} injured",
            "A passenger train operated by {org} derailed near {town} in {region} on {day}, "
            "injuring {n} people, police chief {official} said.",
        ),
        (
            "{n} hurt as {org} train leaves tracks at {town}",
            "Investigators were examining the tracks near {town} where the {org} train came "
            "off the rails; {official} said {n} passengers were in hospital.",
        ),
        (
            "{org} derailment near {town}: investigation opened",
            "Police chief {official} opened an investigation into the derailment near {town}; "
            "{org} said {n} passengers were hurt, none seriously.",
        ),
        (
            "Passengers describe {town} derailment as {org} suspends line",
            "{org} suspended services through {town} after the derailment that injured {n} "
            "people; {official} said the driver was being questioned.",
        ),
    ),
    "recall": (
        (
            "{org} recalls {n} thousand {product} over fire risk",
            "{org} is recalling {n} thousand {product} sold in {region} because a faulty "
            "battery can overheat, chief executive {person} said on {day}.",
        ),
        (
            "Faulty batteries force {org} to recall {product}",
            "Regulators in {region} said {org} must recall {n} thousand {product}; {person} "
            "apologised to customers.",
        ),
        (
            "{person} apologises as {org} {product} recall widens",
            "The recall of {org} {product} grew to {n} thousand units on {day}; {last} said "
            "owners would get a full refund.",
        ),
        (
            "{region} regulator orders {org} {product} recall",
            "{n} thousand {product} made by {org} must be returned, the regulator said; {org} "
            "chief {person} blamed a supplier.",
        ),
    ),
    "match": (
        (
            "{org} beat {org2} {mag}-{g} in {town}",
            "{person} scored twice as {org} beat {org2} {mag}-{g} in {town} on {day}, in "
            "front of {n} thousand fans.",
        ),
        (
            "{last} double sinks {org2}",
            "Two goals from {person} gave {org} a {mag}-{g} win over {org2} in {town}; coach "
            "{official} praised his players.",
        ),
        (
            "{org2} fall to {org} as {last} shines in {town}",
            "{org} won {mag}-{g} against {org2} in {town}; {person} scored twice and coach "
            "{official} said the title race was open.",
        ),
        (
            "Coach {official} hails {org} after {mag}-{g} win over {org2}",
            "{official} said {org} deserved the {mag}-{g} victory over {org2} in {town}; "
            "{person} scored both decisive goals before {n} thousand fans.",
        ),
    ),
    "protest": (
        (
            "Thousands protest in {town} against {org} mine",
            "About {n} thousand people marched in {town} on {day} against plans by {org} to "
            "open a mine, organiser {person} said.",
        ),
        (
            "{town} march: {n} thousand oppose {org} project",
            "Protesters led by {person} filled the centre of {town} to oppose the {org} mine; "
            "mayor {official} said the council would review the permit.",
        ),
        (
            "Mayor {official} to review {org} permit after {town} protest",
            "After {n} thousand people protested in {town}, mayor {official} promised to "
            "review the mining permit given to {org}; {person} welcomed the move.",
        ),
        (
            "Protesters in {town} demand halt to {org} mine",
            "{person}, who organised the {town} protest, said {n} thousand residents signed a "
            "petition against {org}; police said the march was peaceful.",
        ),
    ),
    "resignation": (
        (
            "{region} minister {person} resigns over {org} contracts",
            "{person}, {region}'s minister of transport, resigned on {day} after reports that "
            "{org} won contracts worth {n} million without a tender.",
        ),
        (
            "{last} quits as questions mount over {org} deals",
            "Transport minister {person} stepped down; prime minister {official} said an "
            "inquiry into the {n} million {org} contracts would go ahead.",
        ),
        (
            "Prime minister {official} accepts {last}'s resignation",
            "{official} accepted the resignation of {person} over the {org} affair, in which "
            "contracts worth {n} million were awarded without a tender.",
        ),
        (
            "{org} contracts scandal claims minister {person}",
            "{person} left the government of {region} on {day}, saying the {n} million {org} "
            "contracts had been awarded lawfully.",
        ),
    ),
}

# What full articles carry besides the news: it repeats across an outlet's articles and must not
# make two of them look alike.
BODY = (
    "{org} said it would publish more details later.",
    "Officials in {town} said more information would follow on {day}.",
    "{person} did not respond to a request for comment.",
    "Local media in {region} reported the news first.",
)
BOILERPLATE = (
    "Sign up for our newsletter to get the day's top stories.",
    "Photo: {outlet} staff.",
    "Read more: the latest news from {outlet}.",
    "Follow us on social media for live updates.",
)

# The big event: a storm over a region, told from many angles as it goes on.
STORM_ANGLES = (
    (
        "Storm {storm} nears {region} coast as {official} urges caution",
        "Forecasters said storm {storm} would reach {town} by evening; {official} asked residents "
        "to stay indoors.",
    ),
    (
        "Storm {storm} makes landfall near {town}",
        "Winds of {n}0 km/h hit {town} as storm {storm} came ashore in {region}.",
    ),
    (
        "{n} thousand homes without power after storm {storm}",
        "{org} said crews were working across {region} to restore power after storm {storm}.",
    ),
    (
        "Flooding in {town} as storm {storm} brings heavy rain",
        "Rivers burst their banks in {town}; {official} said {n} people were moved to shelters.",
    ),
    (
        "Schools closed across {region} as storm {storm} continues",
        "{official} closed schools in {town} and nearby towns for a second day.",
    ),
    (
        "Storm {storm}: death toll rises to {n}",
        "Emergency services in {region} confirmed {n} deaths linked to storm {storm}, {org} said.",
    ),
    (
        "Trains cancelled as storm {storm} hits {region}",
        "{org} cancelled services through {town} after trees fell on the tracks.",
    ),
    (
        "Rescuers pull families from flooded homes in {town}",
        "Firefighters used boats in {town}, where storm {storm} left streets under water.",
    ),
    (
        "{official} promises aid for {town} after storm {storm}",
        "The government of {region} will send {n} million in aid, {official} said on a visit to "
        "{town}.",
    ),
    (
        "Clean-up begins in {town} as storm {storm} moves away",
        "Residents of {town} cleared fallen trees; {org} said most power would return by {day}.",
    ),
    (
        "Insurers brace for storm {storm} claims in {region}",
        "{org} estimated damage from storm {storm} at {n} million.",
    ),
    (
        "Storm {storm} batters {region}: what we know",
        "Storm {storm} has cut power to {n} thousand homes and flooded parts of {town}, "
        "{official} said.",
    ),
)


class _Names:
    """Names never given twice in one corpus: two events of a day do not share a town, a
    person's surname or an organisation (first names and regions repeat, as they do)."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def _unique(self, make) -> str:
        while (value := make()) in self.used:
            pass
        self.used.add(value)
        return value

    def surname(self) -> str:
        def make():
            stem = "".join(
                self.rng.choice("bdfgklmnprstvz") + self.rng.choice(VOWELS) for _ in "ab"
            )
            ending = self.rng.choice(("son", "ez", "ova", "ini", "berg", "ski", "ard", "ley"))
            return (stem + ending).capitalize()

        return self._unique(make)

    def person(self) -> str:
        return f"{self.rng.choice(FIRST_NAMES)} {self.surname()}"

    def town(self) -> str:
        return self._unique(lambda: self.rng.choice(TOWN_HEADS) + self.rng.choice(TOWN_TAILS))

    def org(self, kinds: tuple[str, ...]) -> str:
        words = [w for w in ORG_WORDS if w not in self.used]
        if words and self.rng.random() < 0.3:
            word = self._unique(lambda: self.rng.choice(words))
        else:
            word = self.surname()
        return f"{word} {self.rng.choice(kinds)}"

    def facts(self) -> dict[str, str]:
        rng = self.rng
        person = self.person()
        return {
            "town": self.town(),
            "region": rng.choice(REGIONS),
            "person": person,
            "last": person.split()[-1],
            "official": self.person(),
            "org": self.org(("Group", "Mutual", "Holdings", "Rail", "United", "Energy")),
            "org2": self.org(("City", "Rovers", "Systems", "Partners", "Foods", "Labs")),
            "storm": self.surname(),
            "product": rng.choice(PRODUCTS),
            "day": rng.choice(WEEKDAYS),
            "n": str(rng.randrange(3, 400)),
            "mag": str(rng.randrange(4, 8)),
            "g": str(rng.randrange(0, 3)),
        }


def _article(
    form: str,
    template: tuple[str, str],
    facts: dict[str, str],
    outlet: int,
    published: datetime,
    event: str,
    url: str,
) -> dict:
    name, domain = OUTLETS[outlet]
    title, summary = (part.format(**facts) for part in template)
    record = {
        "url": f"https://{domain}/{url}",
        "title": title,
        "summary": summary,
        "source": name,
        "published_at": published.isoformat() + "Z",
        "event": event,
    }
    if form == "title":
        record["summary"] = ""
    elif form == "lower":
        record["title"], record["summary"] = (
            " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split()) for text in (title, summary)
        )
    elif form == "full":
        # Drawn apart from the corpus's own generator: the same seed tells the same events in
        # every form.
        own = random.Random(url)
        byline = f"By {own.choice(FIRST_NAMES)} {own.choice(TOWN_HEADS)}son, {name} staff"
        body = [line.format(**facts) for line in own.sample(BODY, 2)]
        extra = [line.format(outlet=name) for line in BOILERPLATE]
        record["summary"] = ""
        record["content"] = "\n\n".join([byline, summary, *body, *extra])
    elif form != "summary":
        raise ValueError(f"form is one of {', '.join(FORMS)}; got {form!r}")
    return record


def same_kind_day(
    events: int = 60,
    kinds: int = 10,
    *,
    now: datetime,
    seed: int = 11,
    form: str = "summary",
    articles_per_event: tuple[int, ...] = (2, 3, 3, 4, 5),
    hours: float = 24.0,
    names: _Names | None = None,
) -> list[dict]:
    """`events` events, taking the first `kinds` kinds in turn, each told by 2-5 outlets within
    five hours of its start; every start within the last `hours` hours before `now`."""
    rng = random.Random(seed)
    names = names or _Names(rng)
    chosen = list(KINDS)[:kinds]
    records = []
    for event in range(events):
        kind = chosen[event % len(chosen)]
        facts = names.facts()
        start = now - timedelta(hours=rng.uniform(5.0, max(hours, 5.0)))
        size = rng.choice(articles_per_event)
        for n, outlet in enumerate(sorted(rng.sample(range(len(OUTLETS)), size))):
            template = KINDS[kind][outlet % len(KINDS[kind])]
            published = start + timedelta(minutes=rng.uniform(0, 300))
            records.append(
                _article(
                    form,
                    template,
                    facts,
                    outlet,
                    published,
                    f"{kind}-{event}",
                    f"{seed}/{event}/{n}",
                )
            )
    return records


def big_event_day(
    size: int = 500,
    small_events: int = 60,
    *,
    now: datetime,
    seed: int = 13,
    form: str = "summary",
) -> list[dict]:
    """One storm told by `size` articles over 24 hours (every outlet, every angle, a dozen towns
    and officials, numbers that change as it goes on), among a same-kind day of small events
    that has storms of its own."""
    rng = random.Random(seed)
    names = _Names(rng)
    records = same_kind_day(small_events, now=now, seed=seed, form=form, names=names)
    storm, region = names.surname(), rng.choice(REGIONS)
    towns = [names.town() for _ in range(12)]
    officials = [names.person() for _ in range(8)]
    orgs = [names.org(("Energy", "Rail", "Insurance", "Relief")) for _ in range(5)]
    for n in range(size):
        facts = {
            "storm": storm,
            "region": region,
            "town": rng.choice(towns),
            "official": rng.choice(officials),
            "person": rng.choice(officials),
            "org": rng.choice(orgs),
            "n": str(rng.randrange(2, 300)),
            "day": rng.choice(WEEKDAYS),
        }
        published = now - timedelta(hours=24 * (1 - n / size))
        records.append(
            _article(
                form,
                rng.choice(STORM_ANGLES),
                facts,
                rng.randrange(len(OUTLETS)),
                published,
                "big-storm",
                f"{seed}/big/{n}",
            )
        )
    return records
