"""`sao demo`: every stage end to end on the embedded defaults."""
from __future__ import annotations


def cmd_demo(args, cfg) -> int:
    from ..demo import run_demo
    from ..log import setup_logging
    if not args.log_level:           # the demo prints every stage's result itself: only warnings on top
        setup_logging("WARNING")
    run_demo(cfg)
    return 0


def register(sub) -> None:
    """Add this module's commands to the top-level sub-parsers SUB."""
    sub.add_parser("demo", help="run every stage end to end on the embedded defaults").set_defaults(func=cmd_demo)
