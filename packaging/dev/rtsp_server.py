#!/usr/bin/python3
"""Serve H.264 or H.265 MP4 files over RTSP so that they stand in for IP cameras (demo, tests, development).

Each ``--mount PATH=FILE`` becomes ``rtsp://ADDRESS:PORT/PATH``. The file is demuxed and re-packetised, never
re-encoded (about 1% of a core per stream), and paced in real time like a camera. Every viewer of a mount sees the
same live stream: a client that joins late starts at the next keyframe, not at the start of the file.

A file plays once and then the stream ends. ``--loop N`` plays it N more times (N+1 in all): the loops are joined
into one long file with ``ffmpeg -stream_loop N -i FILE -c copy`` in a temporary folder at start, because looping
inside GStreamer restarts timestamps at 0 and stalls clients. Each loop costs one more copy of the file on disk.

Once the server listens it prints one line ``READY rtsp://ADDRESS:PORT`` on stdout; everything else goes to stderr.
SIGTERM or SIGINT (Ctrl-C) stops it and exits with status 0.

It needs GStreamer's gst-rtsp-server and the system's PyGObject, so run it with Debian's ``/usr/bin/python3``, not a
virtual environment's interpreter::

    apt-get install -y --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp \\
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad ffmpeg
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

LOG = logging.getLogger("rtsp_server")

# qtdemux hands the parser the avcC/hvcC stream; config-interval=1 repeats the parameter sets (SPS/PPS, and VPS for
# H.265) every second, as cameras do, so a client that joins a running shared stream can start decoding at the next
# keyframe instead of waiting for parameters that were sent once. {codec} is h264 or h265, read from the file.
PIPELINE = "( filesrc location={location} ! qtdemux ! {codec}parse ! rtp{codec}pay name=pay0 pt=96 config-interval=1 )"
# The preflight check uses the same elements up to the payloader, so a wrong file fails at start with a readable
# message instead of as a bare "503 Service Unavailable" in the first client.
PREFLIGHT = "filesrc location={location} ! qtdemux ! {codec}parse ! rtp{codec}pay ! fakesink"
# What the file holds: qtdemux's video caps name the codec.
CODEC_PROBE = "filesrc location={location} ! qtdemux name=d d.video_0 ! fakesink"
CODECS = {"video/x-h264": "h264", "video/x-h265": "h265"}
PREFLIGHT_TIMEOUT_S = 10

EPILOG = """\
examples (from the repository root):
  /usr/bin/python3 packaging/dev/rtsp_server.py --mount /store=../shared/media/one-by-one-person-detection.mp4
  /usr/bin/python3 packaging/dev/rtsp_server.py --port 0 --loop 25 --mount /aisle=aisle.mp4 --mount /door=door.mp4
then watch or probe a stream:
  ffprobe rtsp://127.0.0.1:8554/store
  ffplay -rtsp_transport tcp rtsp://127.0.0.1:8554/store
"""


@dataclass(frozen=True)
class Mount:
    """One RTSP path and the MP4 file it serves."""

    path: str
    file: Path
    codec: str = "h264"


@dataclass(frozen=True)
class Gi:
    """The GObject-introspection modules, imported only after the arguments parse so --help works anywhere."""

    GLib: ModuleType
    Gst: ModuleType
    GstRtsp: ModuleType
    GstRtspServer: ModuleType


def parse_mount(text: str) -> Mount:
    """Parse ``/path=file.mp4`` into a Mount; argparse shows the error's message."""
    path, sep, file = text.partition("=")
    if not sep or not path or not file:
        raise argparse.ArgumentTypeError(f"expected PATH=FILE, e.g. /store=clip.mp4, got {text!r}")
    if not path.startswith("/"):
        path = "/" + path
    if path == "/" or any(c in path for c in " ?#"):
        raise argparse.ArgumentTypeError(f"mount path {path!r} must be like /name, without spaces, '?' or '#'")
    file_path = Path(file).expanduser()
    if not file_path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {file}")
    return Mount(path=path, file=file_path.resolve())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--mount",
        action="append",
        type=parse_mount,
        required=True,
        metavar="PATH=FILE",
        help="serve the H.264/H.265 MP4 FILE at rtsp://ADDRESS:PORT/PATH (repeat for more streams)",
    )
    parser.add_argument("--port", type=int, default=8554, help="TCP port; 0 picks a free one (default: %(default)s)")
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s; keep it on loopback unless you mean to share the stream)",
    )
    parser.add_argument(
        "--loop",
        type=int,
        default=0,
        metavar="N",
        help="play each file N more times before the stream ends, using ffmpeg at start (default: %(default)s)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each client that connects or leaves")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, got {args.port}")
    if args.loop < 0:
        # ffmpeg's -1 means forever, which would never finish writing the long file.
        parser.error(f"--loop must be 0 or more, got {args.loop}")
    paths = [m.path for m in args.mount]
    if len(set(paths)) != len(paths):
        parser.error(f"each mount path may appear once, got {paths}")
    return args


def import_gi() -> Gi:
    """Import GStreamer's bindings, exiting with a hint when this interpreter has none (e.g. a virtualenv)."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtsp", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtsp, GstRtspServer
    except (ImportError, ValueError) as exc:
        sys.exit(
            f"rtsp_server: cannot load GStreamer's RTSP server bindings under {sys.executable} ({exc}).\n"
            "Run it with the system interpreter (/usr/bin/python3) after: apt-get install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
        )
    Gst.init(None)
    return Gi(GLib=GLib, Gst=Gst, GstRtsp=GstRtsp, GstRtspServer=GstRtspServer)


def launch_quote(path: Path) -> str:
    """Quote a file name for a gst-launch description, which splits on spaces and treats '!' as a link."""
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def make_long_file(src: Path, loops: int, workdir: Path, index: int) -> Path:
    """Join ``loops`` extra copies of ``src`` into one MP4 without re-encoding, so timestamps keep rising."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("rtsp_server: --loop needs ffmpeg on PATH (apt-get install ffmpeg)")
    dst = workdir / f"{index}-{src.stem}-x{loops + 1}.mp4"
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-stream_loop", str(loops)]
    # Video only: the serving chain has no audio branch, and a looped audio track would only cost disk.
    cmd += ["-i", str(src), "-map", "0:v:0", "-c", "copy", "-f", "mp4", str(dst)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"rtsp_server: ffmpeg could not loop {src}: {result.stderr.strip()}")
    return dst


def video_codec(gi: Gi, file: Path) -> str:
    """h264 or h265: the codec of the file's first video track (exits with the reason for anything else)."""
    Gst = gi.Gst
    pipeline = Gst.parse_launch(CODEC_PROBE.format(location=launch_quote(file)))
    try:
        pipeline.set_state(Gst.State.PAUSED)
        result, _, _ = pipeline.get_state(PREFLIGHT_TIMEOUT_S * Gst.SECOND)
        pad = pipeline.get_by_name("d").get_static_pad("video_0")
        caps = pad.get_current_caps() if pad is not None else None
        name = caps.get_structure(0).get_name() if caps is not None and caps.get_size() else None
    finally:
        pipeline.set_state(Gst.State.NULL)
    if result == Gst.StateChangeReturn.FAILURE or name is None:
        sys.exit(f"rtsp_server: cannot serve {file}: no video track found (it must be H.264 or H.265 in MP4/MOV)")
    if name not in CODECS:
        sys.exit(f"rtsp_server: cannot serve {file}: its video is {name}; only H.264 and H.265 are served")
    return CODECS[name]


def preflight(gi: Gi, file: Path, codec: str) -> None:
    """Preroll the serving chain once so that a file that cannot be served fails now, with GStreamer's reason."""
    Gst = gi.Gst
    pipeline = Gst.parse_launch(PREFLIGHT.format(location=launch_quote(file), codec=codec))
    try:
        pipeline.set_state(Gst.State.PAUSED)
        result, _, _ = pipeline.get_state(PREFLIGHT_TIMEOUT_S * Gst.SECOND)
        if result == Gst.StateChangeReturn.FAILURE:
            msg = pipeline.get_bus().pop_filtered(Gst.MessageType.ERROR)
            reason = msg.parse_error()[0].message if msg else "unknown error"
            sys.exit(f"rtsp_server: cannot serve {file}: {reason} (it must be H.264 or H.265 video in MP4/MOV)")
        if result != Gst.StateChangeReturn.SUCCESS:
            sys.exit(f"rtsp_server: {file} did not preroll within {PREFLIGHT_TIMEOUT_S} s")
    finally:
        pipeline.set_state(Gst.State.NULL)


def make_factory(gi: Gi, file: Path, codec: str) -> Any:
    """Build the media factory that serves ``file``."""
    factory = gi.GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(location=launch_quote(file), codec=codec))
    # Shared, because a camera is one live stream: every client of a mount gets the same pipeline, so the bridge and a
    # person watching (or two test readers) see the same frame at the same time, and N clients cost one demux, not N.
    # Unshared, each client would get a private replay from the start of the file, which no real camera does.
    # The trade-off: the shared pipeline is torn down when its last client leaves, so the next client after that
    # starts the file again; and once the file ends the stream stays ended until every client has left (see --loop).
    factory.set_shared(True)
    # Unicast UDP or TCP-interleaved only: nothing here may multicast, whatever a client asks for.
    factory.set_protocols(gi.GstRtsp.RTSPLowerTrans.UDP | gi.GstRtsp.RTSPLowerTrans.TCP)
    return factory


def url_host(address: str) -> str:
    """Bracket an IPv6 literal for use in a URL."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def serve(gi: Gi, mounts: list[Mount], address: str, port: int, verbose: bool) -> None:
    """Run the RTSP server until SIGTERM or SIGINT."""
    GLib, GstRtspServer = gi.GLib, gi.GstRtspServer
    server = GstRtspServer.RTSPServer()
    server.set_address(address)
    server.set_service(str(port))
    # One thread per client instead of the pool's default single thread: a client's setup waits for its media to
    # preroll, and with one thread every camera waited for all those before it (2.8 s each: 16 cameras took 45 s to
    # start, more never did within a benchmark's start timeout).
    server.get_thread_pool().set_max_threads(-1)
    mount_points = server.get_mount_points()
    for mount in mounts:
        mount_points.add_factory(mount.path, make_factory(gi, mount.file, mount.codec))

    if verbose:

        def on_client(_server: Any, client: Any) -> None:
            peer = client.get_connection().get_ip()
            LOG.info("client %s connected", peer)
            client.connect("closed", lambda _c: LOG.info("client %s left", peer))

        server.connect("client-connected", on_client)

    try:
        source_id = server.attach(None)
    except GLib.Error as exc:
        sys.exit(f"rtsp_server: cannot listen on {address}:{port}: {exc.message}")
    if source_id == 0:
        sys.exit(f"rtsp_server: cannot listen on {address}:{port} (in use, or not an address of this machine?)")

    loop = GLib.MainLoop()

    def on_signal(signame: str) -> bool:
        LOG.info("%s: stopping", signame)
        loop.quit()
        return GLib.SOURCE_REMOVE

    # GLib's own signal sources, because a Python handler would not run while the main loop sits in C. Python's
    # handlers are reset first: PyGObject puts a SIGINT fallback of its own over GLib's when it finds Python's default.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, on_signal, signal.Signals(signum).name)

    base = f"rtsp://{url_host(address)}:{server.get_bound_port()}"
    for mount in mounts:
        LOG.info("serving %s%s <- %s (%s)", base, mount.path, mount.file, mount.codec)
    print(f"READY {base}", flush=True)
    loop.run()

    # Closing the clients sends them no more data and drops the shared pipelines, so GStreamer shuts down quietly.
    server.client_filter(lambda _server, _client, *_: GstRtspServer.RTSPFilterResult.REMOVE)
    GLib.source_remove(source_id)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, prepare the files, serve until told to stop."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="rtsp_server: %(message)s", stream=sys.stderr)
    gi = import_gi()
    with tempfile.TemporaryDirectory(prefix="rtsp-server-") as tmp:
        mounts: list[Mount] = args.mount
        if args.loop:
            LOG.info("joining %d plays of each file into one with ffmpeg", args.loop + 1)
            mounts = [Mount(m.path, make_long_file(m.file, args.loop, Path(tmp), i)) for i, m in enumerate(args.mount)]
        mounts = [Mount(m.path, m.file, video_codec(gi, m.file)) for m in mounts]
        for mount in mounts:
            preflight(gi, mount.file, mount.codec)
        serve(gi, mounts, args.address, args.port, args.verbose)
    return 0


if __name__ == "__main__":
    # Until the GLib loop takes over the signals, SIGTERM must unwind like Ctrl-C: that stops a running ffmpeg
    # (subprocess.run kills its child on an exception) and removes the temporary folder.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
