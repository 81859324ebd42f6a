# PYTHON_ARGCOMPLETE_OK (argcomplete's global completion looks for this marker in the entry point's module)
"""The `storesight` command line: the parser and the entry point; each command lives in its own module."""

from __future__ import annotations

import argparse
import ctypes
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

import argcomplete

from plugin.cli.hq import add_hq_parser
from plugin.errors import StoreSightError
from plugin.web.auth.roles import BRIDGE_ROLES

Command = Callable[[argparse.Namespace], int]


def _command(module: str, name: str) -> Command:
    """A command's handler, imported only when it runs: the parser stays cheap to build, so shell completion (which
    builds it on every TAB) answers at once instead of importing OpenCV, Triton's client and every adapter first."""

    def run(args: argparse.Namespace) -> int:
        handler: Command = getattr(importlib.import_module(f"plugin.cli.{module}"), name)
        return handler(args)

    return run


# glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MMAP_THRESHOLD = 256 * 1024


def tune_malloc() -> None:
    """Keep the bridge's memory from creeping up with its threads and frames (call before the first thread starts).

    Two malloc arenas instead of glibc's eight per core: every decode, worker and gRPC thread otherwise gets one of
    its own, each keeping what its thread freed. And a fixed 256 kB mmap threshold: glibc otherwise raises it after
    the first 1 MB frame is freed, and then frames come from (and fragment) the arenas instead of being returned to
    the system when freed; the price is a fresh mapping per converted frame, about 0.1 ms. Measured with
    `storesight bench --cameras 16` on a saturated machine: StoreSight's peak RSS 402 MB, 369 with two arenas, 327
    with both. A MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ set by the user wins; on a C library without mallopt
    (musl) nothing changes."""
    try:
        libc = ctypes.CDLL(None)
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(M_ARENA_MAX, MALLOC_ARENAS)
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # onvif-zeep-async calls basicConfig when imported; ours wins whatever was imported first
    )
    # onvif/zeep debug logs carry whole SOAP envelopes, WS-Security digests included: never wanted, even with -v
    for noisy in ("aiohttp.access", "onvif", "zeep"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _add_user_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The `users` and `audit` commands on the main parser."""
    users = sub.add_parser("users", help="console users (sign-in)").add_subparsers(dest="users_command", required=True)
    roles = sorted(BRIDGE_ROLES)
    pw_help = "read the password from one line of stdin (else $STORESIGHT_PASSWORD, else a prompt)"
    add = users.add_parser("add", help="add a user (password: prompt, $STORESIGHT_PASSWORD or --password-stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=roles)
    add.add_argument("--stores", help="comma-separated store ids the user may see (default: all)")
    add.add_argument("--password-stdin", action="store_true", help=pw_help)
    pw = users.add_parser("passwd", help="change a user's password (ends their sessions)")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true", help=pw_help)
    role = users.add_parser("role", help="change a user's role (and stores); ends their sessions")
    role.add_argument("name")
    role.add_argument("--role", required=True, choices=roles)
    role.add_argument("--stores", help="comma-separated store ids (default: unchanged)")
    rm = users.add_parser("remove", help="remove a user and their sessions")
    rm.add_argument("name")
    ls = users.add_parser("list", help="list users")
    ls.add_argument("--json", action="store_true")
    for p in (add, pw, role, rm, ls):
        p.add_argument("-c", "--config", required=True)
        p.set_defaults(func=_command("users", "cmd_users"))

    audit = sub.add_parser("audit", help="the audit log: sign-ins and every change, newest first")
    audit.add_argument("-c", "--config", required=True)
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(func=_command("users", "cmd_audit"))


def build_parser() -> argparse.ArgumentParser:
    """All subcommands."""
    p = argparse.ArgumentParser(prog="storesight", description="AI retail security bridge for your VMS")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="analyse cameras, raise incidents, serve the console")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("--once", action="store_true", help="process file sources to their end, then exit")
    run.add_argument("--listen", help="HOST:PORT for the console (overrides web.host/web.port)")
    run.set_defaults(func=_command("run", "cmd_run"))

    det = sub.add_parser("detect", help="run the configured detector on images")
    det.add_argument("images", nargs="+")
    det.add_argument("-c", "--config")
    det.add_argument("--triton-url", help="grpc://host:port or http://host:port (default: embedded)")
    det.add_argument("--json", action="store_true")
    det.set_defaults(func=_command("run", "cmd_detect"))

    inc = sub.add_parser("incidents", help="list stored incidents")
    inc.add_argument("-c", "--config", required=True)
    inc.add_argument("--json", action="store_true")
    inc.add_argument("--limit", type=int, default=1000)
    inc.set_defaults(func=_command("records", "cmd_incidents"))

    ob = sub.add_parser("outbox", help="deliveries to sinks").add_subparsers(dest="outbox_command", required=True)
    ol = ob.add_parser("list", help="list deliveries")
    ol.add_argument("-c", "--config", required=True)
    ol.add_argument("--state", choices=["pending", "delivered", "dead"])
    ol.add_argument("--limit", type=int, default=200)
    ol.add_argument("--json", action="store_true")
    ol.set_defaults(func=_command("records", "cmd_outbox"))
    orr = ob.add_parser("retry", help="requeue dead-lettered deliveries (all, or by --sink / --key)")
    orr.add_argument("-c", "--config", required=True)
    orr.add_argument("--sink")
    orr.add_argument("--key", help="one delivery key")
    orr.set_defaults(func=_command("records", "cmd_outbox"))

    onvif = sub.add_parser("onvif", help="ONVIF cameras").add_subparsers(dest="onvif_command", required=True)
    op = onvif.add_parser("probe", help="show a camera's identity, profiles and stream URIs (no password shown)")
    op.add_argument("--host", required=True, help="camera address or host name")
    op.add_argument("--port", type=int, default=80, help="ONVIF HTTP port (default 80)")
    op.add_argument("--username")
    op.add_argument("--password", help="or $STORESIGHT_ONVIF_PASSWORD, which keeps it out of the process list")
    op.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole probe (default 10)")
    op.add_argument("--json", action="store_true")
    op.set_defaults(func=_command("probe", "cmd_onvif_probe"))

    dis = sub.add_parser("discover", help="find ONVIF cameras and the cameras of configured VMSs; write a skeleton")
    dis.add_argument("--target", help="HOST[:PORT]: a directed probe to one device instead of multicast")
    dis.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for answers (default 3)")
    dis.add_argument("--probe", action="store_true", help="also ask each device for its profiles and stream URIs")
    dis.add_argument("--username", help="for --probe, or $STORESIGHT_ONVIF_USERNAME ($STORESIGHT_ONVIF_PASSWORD)")
    dis.add_argument("-c", "--config", help="list the cameras of this config's VMS sinks (all VMS kinds)")
    dis.add_argument("--vms-only", action="store_true", help="with -c: list VMS cameras only, no network probe")
    dis.add_argument("--write-config", metavar="FILE", help="write a config skeleton (credentials as ${ENV} refs)")
    dis.add_argument("--json", action="store_true")
    dis.set_defaults(func=_command("probe", "cmd_discover"))

    _add_user_parsers(sub)

    ins = sub.add_parser("insights", help="footfall, occupancy, dwell and incidents for a time range")
    ins.add_argument("-c", "--config", required=True)
    ins.add_argument("--from", dest="from_", help="ISO date or date-time (site time zone unless an offset is given)")
    ins.add_argument("--to", help="ISO date or date-time, exclusive")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=_command("records", "cmd_insights"))

    vms = sub.add_parser("vms", help="VMS and other sinks").add_subparsers(dest="vms_command", required=True)
    vt = vms.add_parser("test", help="log in to each sink and write a clearly labelled test bookmark or event")
    vt.add_argument("-c", "--config", required=True)
    vt.add_argument("--sink", help="only this sink id")
    vt.set_defaults(func=_command("vms", "cmd_vms_test"))

    bn = sub.add_parser("bench", help="sizing: how many cameras this machine analyses at the target rate")
    bn.add_argument("--cameras", type=int, default=4, help="cameras to run; with --find-max, where the search starts")
    bn.add_argument("--analysis-fps", type=float, default=5.0, help="analysed frames per second per camera")
    bn.add_argument("--duration", type=float, default=30.0, help="measured seconds per trial (default 30)")
    bn.add_argument(
        "--clip", help="video each camera plays (default: the demo clip); not H.264/H.265 MP4: converted with ffmpeg"
    )
    bn.add_argument(
        "--source",
        choices=["rtsp", "file"],
        default="rtsp",
        help="rtsp: the real RTSP server, one stream per camera at the clip's rate; file: realtime-paced files",
    )
    bn.add_argument("--triton-url", help="grpc://host:port or http://host:port (default: embedded)")
    bn.add_argument("--model", default="yolox_nano", help="detector in the cpu model repository (default yolox_nano)")
    bn.add_argument("--find-max", action="store_true", help="search the most cameras that hold the target")
    bn.add_argument("--max-time", type=float, default=900.0, help="--find-max: seconds for the whole search")
    bn.add_argument("--max-cameras", type=int, default=64, help="--find-max: upper bound of the search")
    bn.add_argument("--no-baseline", action="store_true", help="skip the naive in-process baseline")
    bn.add_argument(
        "--baseline-model",
        choices=["published", "served"],
        default="published",
        help="the naive baseline's detector: the export as published, at its own 416 px (default), or the file and "
        "size Triton serves",
    )
    bn.add_argument(
        "--no-stagger",
        action="store_true",
        help="every camera plays the clip from its start at the same moment (default: each from its own point)",
    )
    bn.add_argument("--no-rules", action="store_true", help="detection and tracking only (no incident latency)")
    bn.add_argument(
        "--repeats", type=int, default=3, help="--find-max: trials that decide each count at the boundary (majority)"
    )
    bn.add_argument("--decoder", choices=["pyav", "opencv"], default="pyav", help="camera decoder (default pyav)")
    bn.add_argument("--no-calibration", action="store_true", help="skip measuring the detector's frames/s")
    bn.add_argument("--json", action="store_true")
    bn.set_defaults(func=_command("bench.report", "cmd_bench"))

    add_hq_parser(sub)

    chk = sub.add_parser("check-config", help="validate a config file")
    chk.add_argument("file")
    chk.set_defaults(func=_command("run", "cmd_check_config"))

    cfg = sub.add_parser("config", help="the config file").add_subparsers(dest="config_command", required=True)
    cs = cfg.add_parser("schema", help="print the config's JSON Schema (for YAML editors: docs/configuration.md)")
    cs.add_argument("--compact", dest="indent", action="store_false", help="one line instead of indented")
    cs.set_defaults(func=_command("schema", "cmd_config_schema"))

    models = sub.add_parser("models", help="model files").add_subparsers(dest="models_command", required=True)
    mf = models.add_parser("fetch", help="put the ONNX files in place (local dir or download), sha256-checked")
    mf.add_argument("--from", dest="from_dir", help="directory holding the files (default: $STORESIGHT_MODELS_DIR)")
    mf.add_argument("--url", help="download URL instead of the upstream release")
    mf.add_argument("--accept-sha256", help="also accept this hash (another export you trust)")
    mf.add_argument(
        "--flavour",
        choices=["cpu", "onnx", "gpu"],
        default="cpu",
        help="cpu: python backend (the embedded server, or a Triton with numpy and onnxruntime for its python "
        "backend); onnx: one ONNX graph for a stock Triton on CPUs; gpu: the same on GPUs with TensorRT "
        "(docs/triton.md)",
    )
    mf.add_argument(
        "--repository",
        help="model repository folder to fill, configs included (default: $STORESIGHT_DATA_DIR/triton_models/FLAVOUR; "
        "from a source checkout its triton_models/FLAVOUR; else ~/.local/share/storesight/triton_models/FLAVOUR)",
    )
    mf.add_argument(
        "--model",
        action="append",
        help="only this file (repeatable), an error if it cannot be had; default: all, skipping movenet_lightning.onnx "
        "(local directory only) with a warning when no directory holds it",
    )
    mf.set_defaults(func=_command("fetch", "cmd_models_fetch"))
    mv = models.add_parser(
        "verify",
        help="check a Triton server's detector: reachable, loaded, the tensor contract, the expected people in known "
        "frames (exit 1 when a check fails)",
    )
    mv.add_argument("--url", required=True, help="grpc://host:8001 or http://host:8000")
    mv.add_argument("--model", default="yolox_nano", help="detector model name (default yolox_nano)")
    mv.add_argument("--clip", help="the demo clip (default: $STORESIGHT_MEDIA_DIR or storesight-data/media)")
    mv.add_argument("--image", help="an image of your own instead of the demo clip's known frames")
    mv.add_argument("--expect-people", type=int, help="with --image: how many people are in it")
    mv.add_argument("--min-score", type=float, default=0.35, help="person score counted (the bridge's default 0.35)")
    mv.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for readiness and each request")
    mv.add_argument("--json", action="store_true")
    mv.set_defaults(func=_command("verify", "cmd_models_verify"))

    media = sub.add_parser("media", help="demo media").add_subparsers(dest="media_command", required=True)
    md = media.add_parser("fetch", help="put the demo clip in place, sha256-checked")
    md.add_argument("--from", dest="from_dir", help="directory holding it (default: $STORESIGHT_MEDIA_DIR)")
    md.add_argument("--dest", default="storesight-data/media")
    md.add_argument(
        "--vtest",
        action="store_true",
        help="OpenCV's vtest.avi instead (scenario tests): from --from DIR when it holds it, else unpacked from "
        "Debian's opencv-doc package (apt-get download)",
    )
    md.set_defaults(func=_command("fetch", "cmd_media_fetch"))

    comp = sub.add_parser("completion", help="print the shell completion script (docs/configuration.md)")
    comp.add_argument("shell", choices=["bash", "zsh", "fish"], help="eval its output in that shell's startup file")
    comp.set_defaults(func=cmd_completion)
    return p


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the completion script for one shell (argcomplete's, bound to the `storesight` command)."""
    sys.stdout.write(argcomplete.shellcode(["storesight"], shell=args.shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: expected errors print one clear message and exit non-zero, without a traceback."""
    tune_malloc()  # before the first thread starts: arenas are handed to threads as they first allocate
    parser = build_parser()
    argcomplete.autocomplete(parser)  # answers a completion request from the shell and exits; otherwise a no-op
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        code: int = args.func(args)
        return code
    except StoreSightError as exc:
        print(f"storesight: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
