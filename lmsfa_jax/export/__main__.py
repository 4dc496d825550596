"""Export a run's re-parameterised deploy model (EMA weights) to ONNX or serialized StableHLO.

    python -m lmsfa_jax.export --workdir runs/peld --format onnx|stablehlo
        [--checkpoint best|latest|STEP|PATH] [--image_size 640 | --image_size 384,640]
        [--batch 1|N|dynamic] [--end_to_end [--conf 0.25]] [--out FILE] [--config FILE]
        [--config.eval.iou_threshold=0.7] [--config.eval.max_det=300]
        [--opset 28] [--platforms cpu,cuda,tpu] [--random_init]

Also `lmsfa-export`. The config defaults to the run's WORKDIR/config.json, the image size to its
data.image_size (H,W for a non-square input). Writes --out (default
WORKDIR/export/lmsfa_<scale>_<H>x<W>[_e2e][_b<N>|_dynamic].<onnx|stablehlo>):

  onnx       one .onnx file with the metadata in its metadata_props. ONNX Runtime's CPU provider
             runs the default opset; TensorRT 10 wants --opset 22 or lower. Needs the export
             extra: pip install 'lmsfa_jax[export]'.
  stablehlo  a jax.export artefact lowered for --platforms, weights included, and the metadata
             sidecar FILE.json; `lmsfa_jax.export.load_stablehlo(FILE)` runs it.

Input "images": (B, H, W, 3) float32 RGB in [0, 1], NHWC, letterboxed. Outputs: "decoded" (B, N,
4 + nc + 32) and "protos" (B, H/4, W/4, 32), as the JAX model's; with --end_to_end, the detections
of `postprocess` instead (confidence > --conf, class-aware NMS at config.eval.iou_threshold, the
top config.eval.max_det = D): "boxes" (B, D, 4), "scores" (B, D), "classes" (B, D), "masks" (B, D,
H/4, W/4), "count" (B,). Check an export on your own images or video with
python -m lmsfa_jax.predict --backend onnxruntime|stablehlo --model FILE.
"""
import pathlib

import jax
from absl import flags

from lmsfa_jax import cli
from lmsfa_jax.evaluation import postprocess as pp
from lmsfa_jax.export import metadata as metadata_lib
from lmsfa_jax.export import require, signature, stablehlo
from lmsfa_jax.export.signature import MIN_OPSET, OPSET, ExportSpec
from lmsfa_jax.model import MAX_STRIDE, model_from_config
from lmsfa_jax.predict import class_names_of
from lmsfa_jax.reparam import reparameterize
from lmsfa_jax.training import checkpoints

FORMATS = {"onnx": ".onnx", "stablehlo": ".stablehlo"}
KNOWN_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")


def define_flags(flag_values):
    flags.DEFINE_enum("format", None, list(FORMATS), "file format", flag_values=flag_values)
    flags.DEFINE_string("checkpoint", "best", "best, latest, a step number or a checkpoint path",
                        flag_values=flag_values)
    flags.DEFINE_list("image_size", None, "input size S or H,W, multiples of 32 (default: the config's "
                      "data.image_size)", flag_values=flag_values)
    flags.DEFINE_string("batch", "1", "batch size: a number, or 'dynamic'", flag_values=flag_values)
    flags.DEFINE_boolean("end_to_end", False, "post-processing inside the graph (outputs boxes, scores, "
                         "classes, masks, count)", flag_values=flag_values)
    flags.DEFINE_float("conf", pp.DISPLAY_CONF_THRESHOLD, "confidence threshold of --end_to_end",
                       flag_values=flag_values)
    flags.DEFINE_string("out", None, "output file (default: WORKDIR/export/...)", flag_values=flag_values)
    flags.DEFINE_integer("opset", OPSET, "ONNX opset", lower_bound=MIN_OPSET, upper_bound=OPSET,
                         flag_values=flag_values)
    flags.DEFINE_list("platforms", list(stablehlo.PLATFORMS), "StableHLO: platforms to lower for",
                      flag_values=flag_values)
    flags.DEFINE_boolean("random_init", False, "a randomly initialised model (smoke test)",
                         flag_values=flag_values)


def image_size(values, default: int) -> tuple[int, int]:
    """--image_size (S or H,W; default the config's) -> (H, W), multiples of MAX_STRIDE."""
    values = values or [str(default)]
    text = ",".join(values)
    if not all(v.isdigit() for v in values) or len(values) > 2 or min(int(v) for v in values) == 0:
        raise cli.UsageError(f"--image_size {text}: give S or H,W (positive integers)")
    hw = tuple(int(v) for v in values) * (3 - len(values))
    if hw[0] % MAX_STRIDE or hw[1] % MAX_STRIDE:
        raise cli.UsageError(f"--image_size {text}: height and width must be multiples of {MAX_STRIDE} "
                             "(the network's largest stride)")
    return hw


def batch_size(value: str) -> int | None:
    """--batch: a positive number, or 'dynamic' -> None."""
    if value == "dynamic":
        return None
    if not value.isdigit() or int(value) < 1:
        raise cli.UsageError(f"--batch {value}: give a positive number or 'dynamic'")
    return int(value)


def export_spec(args) -> ExportSpec:
    config = args.config
    unknown = sorted(set(args.platforms) - set(KNOWN_PLATFORMS))
    if unknown:
        raise cli.UsageError(f"--platforms: unknown {', '.join(unknown)} (choose from {', '.join(KNOWN_PLATFORMS)})")
    postprocess = dict(conf_threshold=args.conf, iou_threshold=config.eval.iou_threshold,
                       max_det=config.eval.max_det, max_candidates=pp.MAX_CANDIDATES)
    return ExportSpec(num_classes=config.model.num_classes, scale=config.model.scale,
                      image_hw=image_size(args.image_size, config.data.image_size),
                      batch=batch_size(args.batch), postprocess=postprocess if args.end_to_end else None)


def default_name(spec: ExportSpec, file_format: str) -> str:
    h, w = spec.image_hw
    batch = "" if spec.batch == 1 else "_dynamic" if spec.batch is None else f"_b{spec.batch}"
    return f"lmsfa_{spec.scale}_{h}x{w}{'_e2e' if spec.end_to_end else ''}{batch}{FORMATS[file_format]}"


def source_checkpoint(workdir: pathlib.Path, checkpoint: str, random_init: bool) -> dict:
    """The metadata's source: the run, the checkpoint asked for and the step it resolved to."""
    if random_init:
        return {"workdir": str(workdir.absolute()), "checkpoint": "random_init", "step": None}
    return {"workdir": str(workdir.absolute()), "checkpoint": str(checkpoint),
            "step": checkpoints.resolve_step(workdir, checkpoint)}


def export(args) -> tuple[pathlib.Path, dict]:
    """Writes the export the parsed flags ask for -> (its path, its metadata)."""
    config, workdir = args.config, pathlib.Path(args.workdir).expanduser()
    spec = export_spec(args)
    onnx = require("onnx") if args.format == "onnx" else None  # a missing extra is reported first
    _, variables = cli.load_model(config, workdir, args.checkpoint, args.random_init)
    deploy_variables = jax.jit(reparameterize)(variables)
    details = {"opset": args.opset} if onnx else {"platforms": list(args.platforms)}
    metadata = metadata_lib.build(spec, file_format=args.format, class_names=class_names_of(config),
                                  source=source_checkpoint(workdir, args.checkpoint, args.random_init),
                                  **details)
    out = pathlib.Path(args.out).expanduser() if args.out else workdir / "export" / default_name(spec, args.format)
    out.parent.mkdir(parents=True, exist_ok=True)
    if onnx:
        from lmsfa_jax.export import onnx_model  # pylint: disable=g-import-not-at-top  (needs onnx)
        onnx.save(onnx_model.build(deploy_variables, spec, metadata, opset=args.opset), str(out))
    else:
        model = model_from_config(config, deploy=True).clone(dtype=None)
        fn = signature.jax_function(model, deploy_variables, spec)
        out.write_bytes(stablehlo.serialize(fn, spec, args.platforms))
        metadata_lib.write_sidecar(out, metadata)
    return out, metadata


def describe(out: pathlib.Path, metadata: dict) -> str:
    """One line: what was written."""
    shapes = lambda layouts: ", ".join(f"{o['name']} {tuple(o['shape'])}" for o in layouts)  # noqa: E731
    source = metadata["source"]
    origin = "random init" if source["step"] is None else f"checkpoint {source['checkpoint']} (step {source['step']})"
    extra = f"opset {metadata['opset']}" if "opset" in metadata else \
        f"platforms {','.join(metadata['platforms'])}, metadata {metadata_lib.sidecar_path(out).name}"
    return (f"wrote {out} ({out.stat().st_size / 2 ** 20:.1f} MiB, {metadata['format']}, {extra}) from "
            f"{origin}: {shapes([metadata['input']])} -> {shapes(metadata['outputs'])}")


def main(argv=None) -> pathlib.Path:
    args = cli.parse(argv, __doc__, define_flags, config=cli.RUN_CONFIG)
    if not args.format:
        raise cli.UsageError(f"--format is required: {' or '.join(FORMATS)}")
    out, metadata = export(args)
    print(describe(out, metadata))
    return out


cli_main = cli.entry_point(main)

if __name__ == "__main__":
    cli_main()
