"""What in an evaluation's params decides its score: every record carries it (`settings`),
and greedy soup compares its candidates' with its runs'."""

# what names an evaluation's records, not how it scores
LABELS = ("kind", "epoch", "scheme", "model", "name")


def scoring_settings(cfg: dict) -> dict:
    """The evaluate settings that decide a score: `cfg` (an evaluation's params) without
    its labels."""
    return {k: v for k, v in cfg.items() if k not in LABELS}
