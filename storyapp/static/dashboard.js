// The dashboard's live part: the job's progress from its event stream; when the job ends, the
// page's sections fetched again from the server, which renders them (no second renderer here).
"use strict";

const ACTIVE = ["queued", "running"];
const IDLE_POLL_MS = 5000;
const REFRESH_MS = 3000;

function formatSeconds(value) {
  // The same as the page's `seconds` filter (dashboard.py).
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
}

function show(job) {
  const section = document.getElementById("job");
  const fields = {
    status: job.status,
    done: job.done,
    total: job.total === null ? "?" : job.total,
    percent: Math.round(job.progress * 100),
    duration_s: formatSeconds(job.duration_s),
    eta_s: formatSeconds(job.eta_s),
  };
  for (const [name, count] of Object.entries(job.counts)) fields[`counts.${name}`] = count;
  for (const element of section.querySelectorAll("[data-field]")) {
    const value = String(fields[element.dataset.field]);
    if (element.textContent !== value) element.textContent = value;
  }
  const status = section.querySelector('[data-field="status"]');
  if (status) status.className = `status status-${job.status}`;
  const bar = document.getElementById("job-progress");
  if (bar) {
    bar.value = job.progress;
    bar.textContent = `${fields.percent} %`;
  }
}

async function refresh(ids = ["job", "figures", "stories"]) {
  const response = await fetch("/", { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const id of ids) {
    const fresh = page.getElementById(id);
    if (fresh) document.getElementById(id).replaceWith(fresh);
  }
}

// While a job runs, its stories and the figures come in at most every few seconds: a page
// render costs the server a few queries, and the bar moves between them anyway.
let lastRefresh = Date.now(); // the page was rendered just now
function refreshNowAndThen() {
  if (Date.now() - lastRefresh < REFRESH_MS) return;
  lastRefresh = Date.now();
  refresh(["figures", "stories"]).catch(() => {});
}

function watch(jobId) {
  const source = new EventSource(`/jobs/${encodeURIComponent(jobId)}/events`);
  source.addEventListener("progress", (event) => {
    show(JSON.parse(event.data));
    refreshNowAndThen();
  });
  source.addEventListener("done", async (event) => {
    source.close(); // or EventSource would reconnect and get `done` again
    show(JSON.parse(event.data));
    await refresh();
    idle();
  });
  source.addEventListener("error", () => {
    // CONNECTING: the stream reached its time limit and reconnects by itself. CLOSED: it was
    // refused (too many streams open): follow the job by polling instead.
    if (source.readyState === EventSource.CLOSED) poll(jobId);
  });
}

async function poll(jobId) {
  try {
    const response = await fetch(`/jobs/${encodeURIComponent(jobId)}`);
    if (response.ok) {
      const job = await response.json();
      show(job);
      if (!ACTIVE.includes(job.status)) {
        await refresh();
        idle();
        return;
      }
    }
  } catch {
    // The server is away for a moment (a restart): try again.
  }
  setTimeout(() => poll(jobId), 2000);
}

// With no job running, look now and then for a new one (the schedule or another client).
function idle() {
  const shown = document.getElementById("job").dataset.jobId;
  setTimeout(async () => {
    try {
      const response = await fetch("/jobs?limit=1");
      const newest = response.ok ? (await response.json()).jobs[0] : undefined;
      if (newest && newest.id !== shown) {
        await refresh();
        start();
        return;
      }
    } catch {
      // As in poll(): look again later.
    }
    idle();
  }, IDLE_POLL_MS);
}

function start() {
  const section = document.getElementById("job");
  if (section.dataset.active === "true") watch(section.dataset.jobId);
  else idle();
}

start();
