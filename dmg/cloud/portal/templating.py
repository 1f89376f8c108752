"""The portal's Jinja2 templates (``templates/``), autoescaped, with its filters."""

from __future__ import annotations

from pathlib import Path

import jinja2
from fastapi.templating import Jinja2Templates

from dmg.cloud.portal.format import FILTERS, RUN_ENDED, ago, duration, part_done, rate, when

HERE = Path(__file__).resolve().parent

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_env.filters.update(FILTERS)
_env.globals.update(ago=ago, when=when, duration=duration, rate=rate, part_done=part_done,
                    RUN_ENDED=RUN_ENDED)

templates = Jinja2Templates(env=_env)
