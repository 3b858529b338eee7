"""Structured logs: one JSON object per line, for `storyapp worker` and `storyapp serve`.

Context goes in `extra` (`log.info("job %s planned", jid, extra={"job": jid})`): each extra
field becomes a key of the line, so a log tool can pick out one job or one cluster without
parsing the message.
"""

import json
import logging
from datetime import UTC, datetime

# The attributes every LogRecord has; anything else on a record came in through `extra`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        # default=str: an extra field that JSON cannot hold still ends up on the line.
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    # Huey logs two lines per task at INFO, 760 for a day's news; storyapp logs per job.
    logging.getLogger("huey").setLevel(logging.WARNING)
    logging.getLogger("huey.consumer").setLevel(logging.INFO)
    # httpx logs every LLM request at INFO; the llmcall table keeps each one, with more in it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
