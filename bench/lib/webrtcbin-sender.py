#!/usr/bin/python3
"""Baseline WebRTC sender on GStreamer's webrtcbin, for the sender benchmark.

The benchmark runs this next to the agent's werift-based sender and points the
same headless Chromium at both, so the two differ only in the WebRTC stack:
one live encoder, fanned out to N viewers, each with its own webrtcbin.

    webrtcbin-sender.py --width 1280 --height 720 --fps 30 --bitrate-kbps 2000 [--encode-only]

Run by Debian's /usr/bin/python3 on purpose: PyGObject and the typelibs come
from Debian packages (deps/debian-dev.txt), not from a virtualenv or pyenv.

JSON lines on stdin / stdout:
    in:  {"id": "v1", "offer": "<SDP>"}  a complete (non-trickle) recvonly offer
    out: {"id": "v1", "answer": "<SDP>"} sent once ICE gathering has completed,
                                         so it carries all our candidates
    in:  {"id": "v1", "close": true}     tears that viewer down
    out: {"ready": true}                 once the pipeline is PLAYING; offers
                                         sent before it are refused
    out: {"error": "...", "id": ...}     "id" only when one viewer is concerned
Diagnostics go to stderr. Exits 0 on stdin EOF, SIGTERM or SIGINT; 1 if the
shared pipeline fails.

--encode-only never creates a webrtcbin (offers are refused): it measures
capture, encode and parse alone, the floor under the per-viewer cost. RTP
payloading is per viewer here (see Viewer), so it counts as per-viewer cost.

ICE is confined to loopback: no STUN/TURN, libnice only ever binds 127.0.0.1,
and the remote candidates are dropped unless they are 127.0.0.1 too (see
Viewer.start), so nothing is sent to any other address.
"""

import argparse
import ctypes
import json
import re
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

LOOPBACK = "127.0.0.1"
# libnice gathers host candidates in well under a second when it has a single
# address and no STUN/TURN; this only catches a wedged agent.
GATHER_TIMEOUT_S = 10

# PyGObject exposes no way to add a reference; see Viewer._confine_ice_to_loopback.
_gobject_ref = ctypes.CDLL("libgobject-2.0.so.0").g_object_ref
_gobject_ref.argtypes = [ctypes.c_void_p]
_gobject_ref.restype = ctypes.c_void_p


def send(msg):
    # Called from the main loop only, so lines never interleave.
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def log(text):
    print(f"webrtcbin-sender: {text}", file=sys.stderr, flush=True)


def h264_payload_type(offer):
    """The payload type the offer gives to H.264 constrained baseline 42e01f
    in packetization-mode 1, the profile our encoder produces."""
    h264 = set(re.findall(r"^a=rtpmap:(\d+) H264/90000\s*$", offer, re.M | re.I))
    for pt, params in re.findall(r"^a=fmtp:(\d+) (.+?)\s*$", offer, re.M):
        fmtp = dict(p.strip().split("=", 1) for p in params.split(";") if "=" in p)
        if (
            pt in h264
            and fmtp.get("profile-level-id", "").lower() == "42e01f"
            and fmtp.get("packetization-mode") == "1"
        ):
            return int(pt)
    return None


def loopback_candidates_only(offer):
    """The offer without candidates we must not use.

    Chromium obfuscates its host candidates as mDNS names: handing those to
    webrtcbin would make it resolve them through the system resolver (DNS or
    multicast DNS traffic), and libnice cannot use them anyway. Any literal
    address other than 127.0.0.1 would send checks off loopback. Without remote
    candidates ICE still connects: Chromium checks our 127.0.0.1 candidate and
    libnice learns Chromium's address as a peer-reflexive candidate.
    """
    kept = []
    for line in offer.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            # a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ ...
            if len(fields) < 6 or fields[4] != LOOPBACK:
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


class Viewer:
    """One Chromium peer: a bin with queue ! rtph264pay ! webrtcbin on its own
    tee branch.

    Payloading happens per viewer, after the tee, because webrtcbin never
    rewrites payload types: the RTP must already carry the number this
    viewer's offer chose for H.264 (Chromium 156 uses 108 for 42e01f, while its
    96 is VP8; a shared pt=96 payloader gets an answer of "96 VP8/90000"), and
    two offers need not agree. A payloader is cheap next to the encoder, which
    stays shared.
    """

    def __init__(self, sender, vid):
        self.sender = sender
        self.id = vid
        self.bin = None
        self.webrtc = None
        self.tee_pad = None
        self.answered = False
        self.closing = False
        self.gather_timer = 0
        self.handlers = []

    def start(self, offer_text):
        pt = h264_payload_type(offer_text)
        if pt is None:
            raise ValueError("offer has no H.264 42e01f packetization-mode=1 codec")
        res, offer_sdp = GstSdp.SDPMessage.new_from_text(loopback_candidates_only(offer_text))
        if res != GstSdp.SDPResult.OK:
            raise ValueError(f"unparsable offer SDP ({res.value_nick})")

        # Auto-named: a closed viewer's bin may still be in the pipeline when
        # the parent reuses its id.
        self.bin = Gst.Bin.new(None)
        # webrtcbin holds data back until negotiation and then the DTLS
        # handshake are done. Leaky, so that a viewer still connecting (or
        # falling behind) drops its own frames instead of stalling the tee and
        # every other viewer; short, so that it does not start with a burst of
        # stale frames (the default second's worth reached Chromium at ~47 fps).
        queue = Gst.ElementFactory.make("queue")
        queue.set_property("leaky", "downstream")
        queue.set_property("max-size-buffers", 0)
        queue.set_property("max-size-bytes", 0)
        queue.set_property("max-size-time", 200 * Gst.MSECOND)
        pay = Gst.ElementFactory.make("rtph264pay")
        for name, value in (
            ("pt", pt),
            ("mtu", 1200),
            # SPS/PPS with every IDR: a viewer joins mid-stream.
            ("config-interval", -1),
            ("aggregate-mode", "zero-latency"),
        ):
            pay.set_property(name, value)
        webrtc = Gst.ElementFactory.make("webrtcbin")
        webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self._confine_ice_to_loopback(webrtc)
        for element in (queue, pay, webrtc):
            self.bin.add(element)
        queue.link(pay)
        self.bin.add_pad(Gst.GhostPad.new("sink", queue.get_static_pad("sink")))
        self.webrtc = webrtc

        # Our transceiver exists before the offer arrives, so webrtcbin binds it
        # to the offer's video m-line. Sendonly, and codec preferences naming
        # the offered payload type, so the answer never depends on whether caps
        # have reached the pad yet. profile-level-id is left out on purpose:
        # webrtcbin refuses sink caps that do not intersect the preferences,
        # and x264 signals constrained baseline as 42c01f where Chromium offers
        # 42e01f (the same profile; e0 just sets one more constraint flag).
        # The answer then carries 42c01f from the payloader's caps, which
        # Chromium matches to its 42e01f codec.
        sink = webrtc.request_pad_simple("sink_%u")
        transceiver = sink.get_property("transceiver")
        transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        transceiver.set_property(
            "codec-preferences",
            Gst.Caps.from_string(
                "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
                f"payload={pt},packetization-mode=(string)1"
            ),
        )
        pay.get_static_pad("src").link(sink)

        self.handlers = [
            webrtc.connect(f"notify::{prop}", self._on_webrtc_thread, step)
            for prop, step in (
                ("ice-gathering-state", self._maybe_answer),
                ("ice-connection-state", self._log_state),
                ("connection-state", self._log_state),
            )
        ]

        self.sender.attach(self)
        self.bin.sync_state_with_parent()
        self.tee_pad = self.sender.tee.request_pad_simple("src_%u")
        self.tee_pad.link(self.bin.get_static_pad("sink"))

        self.gather_timer = GLib.timeout_add_seconds(GATHER_TIMEOUT_S, self._gather_timed_out)
        offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, offer_sdp)
        webrtc.emit(
            "set-remote-description",
            offer,
            self._promise(self._on_remote_set, "set-remote-description"),
        )

    @staticmethod
    def _confine_ice_to_loopback(webrtc):
        ice = webrtc.get_property("ice-agent")
        # webrtcbin (1.22, and still 1.26) keeps its ICE agent on the floating
        # reference it was created with. Wrapping it sinks that reference, so
        # the Python object would own webrtcbin's only reference: the agent
        # would die with the wrapper, or be unreffed twice at exit. Give
        # webrtcbin a reference of its own; PyGObject's hash() of a GObject is
        # its address. Only when the bug is there, so a fixed GStreamer leaks
        # nothing.
        if ice.__grefcount__ == 1:
            _gobject_ref(hash(ice))
        # Once libnice has an explicit local address it gathers on that one
        # only; by default it enumerates the interfaces and skips loopback.
        ice.emit("add-local-ip-address", LOOPBACK)
        # UDP is all Chromium needs on loopback; ICE-TCP would add a listening
        # socket and more candidates per viewer.
        ice.set_property("ice-tcp", False)
        # Debian builds libnice with gupnp-igd: with UPnP on, gathering would
        # send SSDP multicast looking for a router to map ports on.
        ice.get_property("agent").set_property("upnp", False)

    # webrtcbin calls back on its own threads; every step of a viewer runs on
    # the main loop, so the state below needs no locking.
    @staticmethod
    def _on_webrtc_thread(_webrtc, _pspec, step):
        GLib.idle_add(step)

    @staticmethod
    def _on_promise(promise, step, what):
        # The promise and its reply die when this returns (PyGObject does not
        # copy boxed values read from them), so the outcome is copied out here
        # and handled on the main loop.
        error = answer = None
        result = promise.wait()
        reply = promise.get_reply() if result == Gst.PromiseResult.REPLIED else None
        if result != Gst.PromiseResult.REPLIED:
            error = f"{what}: promise {result.value_nick}"
        elif reply is not None and reply.has_field("error"):
            error = f"{what}: {reply.get_value('error').message}"
        elif reply is not None and reply.has_field("answer"):
            answer = reply.get_value("answer").copy()
        GLib.idle_add(step, error, answer)

    def _promise(self, step, what):
        return Gst.Promise.new_with_change_func(self._on_promise, step, what)

    def _on_remote_set(self, error, _answer):
        if self.closing:
            return False
        if error:
            self.sender.viewer_failed(self, error)
            return False
        self.webrtc.emit("create-answer", None, self._promise(self._on_answer, "create-answer"))
        return False

    def _on_answer(self, error, answer):
        if self.closing:
            return False
        if error or answer is None:
            self.sender.viewer_failed(self, error or "create-answer: no answer")
            return False
        # Setting the local description starts ICE gathering; the answer goes
        # out when it completes (_maybe_answer).
        self.webrtc.emit(
            "set-local-description",
            answer,
            self._promise(self._on_local_set, "set-local-description"),
        )
        return False

    def _on_local_set(self, error, _answer):
        if self.closing:
            return False
        if error:
            self.sender.viewer_failed(self, error)
            return False
        # Gathering may already have completed before this promise was handled.
        self._maybe_answer()
        return False

    def _maybe_answer(self):
        if self.closing or self.answered:
            return False
        state = self.webrtc.get_property("ice-gathering-state")
        local = self.webrtc.get_property("local-description")
        if state != GstWebRTC.WebRTCICEGatheringState.COMPLETE or local is None:
            return False
        sdp = local.sdp.as_text()
        if f" {LOOPBACK} " not in sdp:
            self.sender.viewer_failed(self, "ICE gathering produced no 127.0.0.1 candidate")
            return False
        self.answered = True
        self._cancel_gather_timer()
        send({"id": self.id, "answer": sdp})
        return False

    def _gather_timed_out(self):
        self.gather_timer = 0
        if not self.answered and not self.closing:
            error = f"ICE gathering not complete after {GATHER_TIMEOUT_S} s"
            self.sender.viewer_failed(self, error)
        return False

    def _cancel_gather_timer(self):
        if self.gather_timer:
            GLib.source_remove(self.gather_timer)
            self.gather_timer = 0

    def _log_state(self):
        if not self.closing:
            ice = self.webrtc.get_property("ice-connection-state").value_nick
            pc = self.webrtc.get_property("connection-state").value_nick
            log(f"{self.id}: ice {ice}, connection {pc}")
        return False

    def close(self):
        """Detaches the branch from the tee without disturbing the others."""
        if self.closing:
            return
        self.closing = True
        self._cancel_gather_timer()
        if self.tee_pad is None:
            self._dispose()
            return

        # Unlink only between two buffers: the IDLE probe runs when the tee is
        # not pushing into this pad. State changes are left to the main loop,
        # as a streaming thread must not shut its own elements down.
        def on_idle(pad, _info):
            pad.unlink(self.bin.get_static_pad("sink"))
            GLib.idle_add(self._dispose)
            return Gst.PadProbeReturn.REMOVE

        self.tee_pad.add_probe(Gst.PadProbeType.IDLE, on_idle)

    def _dispose(self):
        if self.tee_pad is not None:
            self.sender.tee.release_request_pad(self.tee_pad)
            self.tee_pad = None
        if self.bin is not None:
            self.bin.set_state(Gst.State.NULL)
            self.sender.detach(self)
            # The handlers hold this Viewer, which holds the webrtcbin: a cycle
            # through C that Python's collector cannot see, and it would keep
            # the webrtcbin with its sockets and threads alive.
            for handler in self.handlers:
                self.webrtc.disconnect(handler)
            self.handlers = []
            self.webrtc = None
            self.bin = None
        return False


class Sender:
    def __init__(self, args):
        self.encode_only = args.encode_only
        self.viewers = {}  # by id, until closed
        self.branches = {}  # viewer bin -> viewer, until removed from the pipeline
        self.loop = GLib.MainLoop()
        self.exit_code = 0
        self.ready = False
        self.stopping = False

        # The encoder feeds a tee that always has a fakesink branch, so encoding
        # runs at the same rate with zero, one or many viewers; viewers add
        # their own branches. Constrained baseline is what Chromium decodes
        # everywhere and what the agent sends; h264parse re-inserts SPS/PPS
        # before every IDR for viewers that join mid-stream.
        self.pipeline = Gst.parse_launch(
            "videotestsrc is-live=true pattern=ball"
            " ! video/x-raw,format=I420"
            f",width={args.width},height={args.height},framerate={args.fps}/1"
            " ! x264enc tune=zerolatency speed-preset=ultrafast"
            f" key-int-max={args.fps} bitrate={args.bitrate_kbps}"
            " ! video/x-h264,profile=constrained-baseline"
            " ! h264parse config-interval=-1"
            " ! tee name=t allow-not-linked=true"
            " t. ! queue ! fakesink sync=false"
        )
        self.tee = self.pipeline.get_by_name("t")
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self._on_bus_message)

    def run(self):
        for signum in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, self.stop)
        threading.Thread(target=self._read_stdin, daemon=True).start()
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            send({"error": "pipeline failed to start"})
            self.pipeline.set_state(Gst.State.NULL)
            return 1
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)
        return self.exit_code

    def stop(self):
        if not self.stopping:
            self.stopping = True
            self.loop.quit()
        return GLib.SOURCE_REMOVE

    def _read_stdin(self):
        # A blocking reader thread rather than a GLib IO watch: an offer spans
        # several pipe writes and is only complete at its newline.
        for line in sys.stdin:
            GLib.idle_add(self._handle_line, line)
        GLib.idle_add(self.stop)

    def _handle_line(self, line):
        line = line.strip()
        if not line or self.stopping:
            return False
        try:
            msg = json.loads(line)
            vid = msg["id"]
        except (ValueError, TypeError, KeyError):
            send({"error": f"bad request: {line[:200]}"})
            return False
        if isinstance(msg.get("offer"), str):
            self._add_viewer(vid, msg["offer"])
        elif msg.get("close"):
            viewer = self.viewers.pop(vid, None)
            if viewer is None:
                send({"id": vid, "error": "no such viewer"})
            else:
                viewer.close()
        else:
            send({"id": vid, "error": "expected offer or close"})
        return False

    def _add_viewer(self, vid, offer):
        if self.encode_only:
            send({"id": vid, "error": "--encode-only: no viewers"})
        elif not self.ready:
            send({"id": vid, "error": "pipeline not ready yet"})
        elif vid in self.viewers:
            send({"id": vid, "error": "viewer id already in use"})
        else:
            viewer = Viewer(self, vid)
            self.viewers[vid] = viewer
            try:
                viewer.start(offer)
            except ValueError as e:
                self.viewer_failed(viewer, str(e))

    def viewer_failed(self, viewer, error):
        send({"id": viewer.id, "error": error})
        if self.viewers.get(viewer.id) is viewer:
            del self.viewers[viewer.id]
        viewer.close()

    def attach(self, viewer):
        self.pipeline.add(viewer.bin)
        self.branches[viewer.bin] = viewer

    def detach(self, viewer):
        self.pipeline.remove(viewer.bin)
        del self.branches[viewer.bin]

    def _branch_of(self, obj):
        """The viewer whose bin obj is in, even one being torn down, or None
        for the shared part of the pipeline."""
        parent = obj.get_parent()
        while parent is not None and parent is not self.pipeline:
            obj, parent = parent, parent.get_parent()
        return self.branches.get(obj)

    def _on_bus_message(self, _bus, msg):
        if msg.type == Gst.MessageType.STATE_CHANGED and msg.src is self.pipeline:
            _old, new, _pending = msg.parse_state_changed()
            if new == Gst.State.PLAYING and not self.ready:
                self.ready = True
                send({"ready": True})
        elif msg.type == Gst.MessageType.ERROR:
            err, debug = msg.parse_error()
            viewer = self._branch_of(msg.src)
            if viewer is not None:
                # One peer going wrong (DTLS, ICE) must not end the others.
                log(f"{viewer.id}: {err.message} ({debug})")
                if not viewer.closing:
                    self.viewer_failed(viewer, err.message)
            else:
                log(f"{msg.src.get_name()}: {err.message} ({debug})")
                send({"error": f"{msg.src.get_name()}: {err.message}"})
                self.exit_code = 1
                self.stop()
        elif msg.type == Gst.MessageType.EOS:
            send({"error": "unexpected end of stream"})
            self.exit_code = 1
            self.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate-kbps", type=int, default=2000)
    parser.add_argument("--encode-only", action="store_true")
    args = parser.parse_args()
    Gst.init(None)
    return Sender(args).run()


if __name__ == "__main__":
    sys.exit(main())
