"""End-to-end FACT training-step benchmark (docs/design.md §4): the reference backend vs ``auto``.

    python -m benchmarks.train_step                                  # resnet50, 448², bf16 on GPU
    python -m benchmarks.train_step --head-only                      # cached backbone features
    python -m benchmarks.train_step --device cpu --image-size 224 --batch-size 4 --dtype float32

A step is forward + FACT loss + backward + AdamW update on a synthetic batch. ``--head-only``
replaces the backbone by the identity and feeds cached feature maps [B, C_feat, h, w], which is
where FACT's own ops dominate. Writes JSON with the device name when ``--out`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from benchmarks.run import environment
from fact_fast import ops
from fact_fast.data import label_graph
from fact_fast.models import TaskInfo, create_model
from fact_fast.testing.timing import time_fn


def build(args, device):
    c = args.num_classes
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(512, c, generator=g) < 0.15).to(torch.uint8).numpy()
    graph = label_graph(labels, "threshold", threshold=0.4)  # ML-GCN's graph, as in earlier measurements
    emb = torch.randn(c, 384, generator=g)
    task = TaskInfo([f"class{i}" for i in range(c)], emb, {"rowptr": graph.rowptr, "col": graph.col})
    model = create_model(args.model, task).to(device)
    stride = model.backbone.reduction if hasattr(model.backbone, "reduction") else 32
    if args.head_only:
        channels = model.backbone.out_channels
        model.backbone = torch.nn.Identity()
        side = args.image_size // stride
        x = torch.randn(args.batch_size, channels, side, side, generator=g).to(device)
    else:
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device)
    y = (torch.rand(args.batch_size, c, generator=g) < 0.15).float().to(device)
    model.train()
    model.initialize(x)
    loss_fn = model.loss
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return model, loss_fn, opt, x, y


def make_step(model, loss_fn, opt, x, y, device, dtype):
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = model(x)
        loss = loss_fn(out, y)["total"]
        loss.backward()
        opt.step()
    return step


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fact_resnet50")
    p.add_argument("--num-classes", type=int, default=40)
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="autocast dtype (default bfloat16 on GPU, float32 on CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--head-only", action="store_true", help="cached backbone features instead of images")
    p.add_argument("--backends", default="reference,auto")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    results = {}
    for backend in args.backends.split(","):
        torch.manual_seed(0)
        with ops.use_backend(backend):
            model, loss_fn, opt, x, y = build(args, device)
            step = make_step(model, loss_fn, opt, x, y, device, dtype)
            results[backend] = time_fn(step, device, args.warmup, args.iters, args.max_seconds)
        print(f"{backend:>10}: {results[backend]['median_ms']:9.2f} ms/step", file=sys.stderr)
    ref = results.get("reference", {}).get("median_ms")
    for entry in results.values():
        if ref:
            entry["speedup_vs_reference"] = ref / entry["median_ms"]
    doc = {"environment": environment(device), "config": {**vars(args), "dtype": str(dtype)}, "results": results}
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    print(json.dumps(doc["results"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
