"""Each optimizer step's loss and gradient under the plain cut and the length-aware cut.

Run in one process, or under `accelerate launch` with several: for each of the first
--steps steps it accumulates the step's gradient with the plain cut (micro_batch_size rows
at a time), then, from the same weights, with the token-budget cut, and records both
losses, the largest gradient difference relative to the gradient's largest element, the
rows each cut trained on and their padded tokens; then it takes the optimizer step. The
main process writes the records to --out as JSON (tests/test_sft.py reads them).
"""
import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ordermerge.sft import load_run  # noqa: E402


def grads(model) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten().clone() for p in model.parameters()
                      if p.grad is not None])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    for flag in ("--base", "--data-dir", "--order", "--work-dir", "--out"):
        p.add_argument(flag, required=True, type=Path)
    p.add_argument("--params", required=True, type=json.loads)
    p.add_argument("--tokens", required=True, type=int, help="train.micro_batch_tokens")
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args()
    torch.use_deterministic_algorithms(True)
    run = load_run("gsm8k", args.base, args.data_dir, args.order, args.work_dir, args.params,
                   "step-equality", lambda m: None)
    from accelerate.utils import gather_object
    run.model.train()
    out = []
    for step in run.steps[:args.steps]:
        seen = {}
        for name, tokens in (("plain", None), ("tokens", args.tokens)):
            run.micro_tokens = tokens
            parts = gather_object([run._accumulate(step)])
            seen[name] = {
                "loss": sum(x.loss for x in parts), "grad": grads(run.model),
                "ids": [r["id"] for r in sorted((r for x in parts for r in x.records),
                                                key=lambda r: r["position"])],
                "real": sum(x.real_tokens for x in parts),
                "processed": sum(x.processed_tokens for x in parts)}
            if name == "plain":
                run.opt.zero_grad(set_to_none=True)
        g0, g1 = seen["plain"]["grad"], seen["tokens"]["grad"]
        out.append({"step": step.index + 1, "order_ids": list(step.ids),
                    "loss": [seen["plain"]["loss"], seen["tokens"]["loss"]],
                    "grad_rel_diff": float((g0 - g1).abs().max() / g0.abs().max()),
                    "grad_norm": [float(g0.norm()), float(g1.norm())],
                    **{f"{k}_{n}": seen[n][k] for n in seen for k in ("ids", "real", "processed")}})
        run.opt.step()  # with the token cut's gradient
        run.sched.step()
        run.opt.zero_grad(set_to_none=True)
    if run.acc.is_main_process:
        args.out.write_text(json.dumps({"processes": run.acc.num_processes, "steps": out}))
    run.acc.wait_for_everyone()


if __name__ == "__main__":
    main()
