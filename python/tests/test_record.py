"""nofrag.record without a GPU: converting memory-history events to a replayable trace, and the
Recorder against a stand-in torch module whose history we script. If the command-line replayer is
built (build/nofrag, or NOFRAG_CLI), the written trace is replayed and its figures checked."""
import datetime
import gzip
import json
import os
import pickle
import subprocess
import sys
import tempfile
import types
import unittest

from nofrag import record
from tests.stand_in import StandInTorchCase

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
T0 = 1_700_000_000_000_000  # microseconds since the epoch
MIB = 1 << 20


def event(action, addr, size, t, stream=0):
    return {"action": action, "addr": addr, "size": size, "stream": stream, "time_us": T0 + t}


def two_steps():
    """Two steps: a weight kept throughout, then per step an activation and a temporary; a free of a
    block from before the recording; a segment event to be ignored."""
    return [
        event("free_completed", 0x900000, 4096, 0),           # allocated before recording: skipped
        event("alloc", 0x100000, 8 * MIB, 1),                   # weight
        event("segment_alloc", 0x0, 20 * MIB, 2),               # not a block event
        event("alloc", 0x200000, 2 * MIB, 10),                  # step 0 activation
        event("alloc", 0x400000, MIB, 11, stream=7),            # temporary on another stream
        event("free_requested", 0x400000, MIB, 12, stream=7),
        event("free_completed", 0x400000, MIB, 13, stream=7),
        event("free_requested", 0x200000, 2 * MIB, 14),
        event("free_completed", 0x200000, 2 * MIB, 15),
        event("alloc", 0x200000, 3 * MIB, 20),                  # step 1 activation
        event("free_completed", 0x200000, 3 * MIB, 21),
    ]


def read_trace(base):
    with gzip.open(base + ".csv.gz", "rt") as f:
        lines = f.read().splitlines()
    with open(base + ".steps") as f:
        steps = [int(line) for line in f if line.strip() and not line.startswith("#")]
    return lines, steps


class ConvertTest(unittest.TestCase):
    def test_blocks_live_from_alloc_to_free_completed(self):
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "sub", "job")
            summary = record.convert(two_steps(), [T0 + 10, T0 + 20], base)
            lines, steps = read_trace(base)
        self.assertEqual(lines[0], "Thread,Time,Action,Pointer,Size,Stream")
        rows = [line.split(",") for line in lines[1:]]
        self.assertEqual([(r[2], r[3], int(r[4]), r[5]) for r in rows], [
            ("allocate", "0x100000", 8 * MIB, "0"),
            ("allocate", "0x200000", 2 * MIB, "0"),
            ("allocate", "0x400000", MIB, "7"),
            ("free", "0x400000", MIB, "7"),
            ("free", "0x200000", 2 * MIB, "0"),
            ("allocate", "0x200000", 3 * MIB, "0"),
            ("free", "0x200000", 3 * MIB, "0"),
        ])
        self.assertEqual(steps, [1, 5])  # rows where steps 0 and 1 begin
        self.assertEqual(summary["events"], 7)
        self.assertEqual(summary["steps"], 2)
        self.assertEqual(summary["live_at_end"], 1)  # the weight

    def test_free_requested_when_no_completions(self):
        events = [e for e in two_steps() if e["action"] != "free_completed"]
        with tempfile.TemporaryDirectory() as d:
            summary = record.convert(events, [], os.path.join(d, "job"))
            lines, steps = read_trace(os.path.join(d, "job"))
        self.assertEqual(summary["events"], 6)  # the step-1 activation is never freed here
        self.assertEqual(sum(1 for line in lines[1:] if ",free," in line), 2)
        self.assertEqual(steps, [])

    def test_marks_without_events_between_them_warn(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertWarnsRegex(UserWarning, "3 step marks fell on 2 distinct rows"):
                summary = record.convert(two_steps(), [T0 + 10, T0 + 20, T0 + 20], os.path.join(d, "job"))
        self.assertEqual(summary["steps"], 2)

    def test_bad_input(self):
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "job")
            with self.assertRaisesRegex(record.RecordingError, "no allocation"):
                record.convert([event("free_completed", 0x10, 512, 0)], [], base)
            with self.assertRaisesRegex(record.RecordingError, "allocated twice"):
                record.convert([event("alloc", 0x10, 512, 0), event("alloc", 0x10, 512, 1)], [], base)
            with self.assertRaisesRegex(ValueError, "ascending"):
                record.convert(two_steps(), [T0 + 20, T0 + 10], base)
            with self.assertRaisesRegex(record.RecordingError, "filled up"):
                record.convert(two_steps(), [T0 + 10], base, max_entries=len(two_steps()))
            self.assertFalse(os.path.exists(base + ".csv.gz"))

    @unittest.skipUnless(os.access(os.environ.get("NOFRAG_CLI", os.path.join(REPO, "build", "nofrag")), os.X_OK),
                         "the nofrag command line is not built")
    def test_replays(self):
        cli = os.environ.get("NOFRAG_CLI", os.path.join(REPO, "build", "nofrag"))
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "job")
            record.convert(two_steps(), [T0 + 10, T0 + 20], base)
            out = subprocess.run([cli, "replay", "--json", "--min-capacity", base + ".csv.gz"], check=True,
                                 capture_output=True, text=True).stdout
        d = json.loads(out)
        self.assertEqual(d["events"], 7)
        self.assertEqual(d["steps"], 2)
        self.assertEqual(d["peak_live_bytes"], 11 * MIB)  # weight + step-0 activation + temporary
        self.assertEqual(d["failed_allocs"], 0)
        self.assertGreaterEqual(d["min_capacity_bytes"], 11 * MIB)


class SnapshotTest(unittest.TestCase):
    """python3 -m nofrag.record SNAPSHOT OUT: a snapshot saved with torch.cuda.memory._dump_snapshot."""

    def write(self, d, snapshot, raw=None):
        path = os.path.join(d, f"snap{len(os.listdir(d))}.pickle")
        with open(path, "wb") as f:
            f.write(raw if raw is not None else pickle.dumps(snapshot))
        return path

    def test_converts_the_device_with_history(self):
        with tempfile.TemporaryDirectory() as d:
            snap = {"segments": [], "device_traces": [[], two_steps()]}
            path = self.write(d, snap)
            summary = record.convert_snapshot(path, os.path.join(d, "job"))
            lines, steps = read_trace(os.path.join(d, "job"))
            self.assertEqual(summary["events"], 7)
            self.assertEqual(len(lines), 8)  # the header and 7 rows
            self.assertEqual(steps, [])  # a snapshot has no step marks
            # The command line does the same and says what to run next.
            res = subprocess.run([sys.executable, "-m", "nofrag.record", path, os.path.join(d, "cli")],
                                 capture_output=True, text=True, cwd=os.path.join(REPO, "python"))
            self.assertEqual(res.returncode, 0, res.stderr)
            self.assertIn("7 events", res.stdout)
            self.assertIn("nofrag replay --min-capacity", res.stdout)
            self.assertEqual(read_trace(os.path.join(d, "cli"))[0], lines)

    def test_bad_snapshots(self):
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "job")
            cases = [
                (self.write(d, None, raw=b"not a pickle at all"), "not a PyTorch memory snapshot"),
                # A pickle that names a class could run code on load: refused.
                (self.write(d, None, raw=pickle.dumps({"device_traces": [two_steps()], "x": datetime.date(2026, 1, 1)})),
                 "not a plain memory snapshot: it names datetime.date"),
                (self.write(d, [1, 2]), "no device_traces"),
                (self.write(d, {"device_traces": [[], []]}), "history is empty"),
                (self.write(d, {"device_traces": [two_steps(), two_steps()]}), "name one with --device"),
            ]
            for path, message in cases:
                with self.assertRaisesRegex(record.RecordingError, message):
                    record.convert_snapshot(path, base)
            path = self.write(d, {"device_traces": [two_steps(), []]})
            with self.assertRaisesRegex(record.RecordingError, "no history for device 1"):
                record.convert_snapshot(path, base, device=1)
            with self.assertRaisesRegex(record.RecordingError, "no history for device 5"):
                record.convert_snapshot(path, base, device=5)
            self.assertFalse(os.path.exists(base + ".csv.gz"))
            res = subprocess.run([sys.executable, "-m", "nofrag.record", os.path.join(d, "missing"), base],
                                 capture_output=True, text=True, cwd=os.path.join(REPO, "python"))
            self.assertEqual(res.returncode, 1)
            self.assertIn("No such file", res.stderr)


def scripted_torch(events, device_count=1):
    """A stand-in torch whose memory history returns `events` for device 0."""
    calls = []
    torch = types.ModuleType("torch")
    cuda = types.ModuleType("torch.cuda")
    memory = types.ModuleType("torch.cuda.memory")

    def history(*args, **kwargs):
        calls.append(kwargs.get("enabled", args[0] if args else None))

    memory._record_memory_history = history
    memory._snapshot = lambda: {"device_traces": [list(events)] + [[] for _ in range(device_count - 1)]}
    cuda.memory = memory
    cuda.synchronize = lambda: None
    cuda.current_device = lambda: 0
    torch.cuda = cuda
    return torch, calls


class RecorderTest(StandInTorchCase):
    def test_start_step_stop(self):
        torch, calls = scripted_torch(two_steps())
        self.use_torch(torch)
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "job")
            rec = record.Recorder(base)
            with self.assertRaises(record.RecordingError):
                rec.step()
            rec.start()
            rec.step()
            summary = rec.stop()
            self.assertTrue(os.path.exists(base + ".csv.gz") and os.path.exists(base + ".steps"))
        self.assertEqual(calls, ["all", None])  # history on, then off
        self.assertEqual(summary["events"], 7)
        with self.assertRaises(record.RecordingError):
            rec.stop()

    def test_pytorch_figures_written_beside_the_trace_and_read_by_the_replay(self):
        torch, _ = scripted_torch(two_steps())
        torch.cuda.max_memory_allocated = lambda device: 3 << 20
        torch.cuda.max_memory_reserved = lambda device: 6 << 20
        torch.__version__ = "9.9.9"
        self.use_torch(torch)
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "job")
            rec = record.Recorder(base).start()
            rec.step()
            summary = rec.stop()
            self.assertEqual(summary["pytorch_file"], base + ".pytorch")
            text = open(base + ".pytorch").read()
            self.assertIn(f"allocated_bytes_peak {3 << 20}\n", text)
            self.assertIn(f"reserved_bytes_peak {6 << 20}\n", text)
            self.assertIn("torch 9.9.9", text)
            nofrag_bin = os.environ.get("NOFRAG_CLI", os.path.join(REPO, "build", "nofrag"))
            if os.access(nofrag_bin, os.X_OK):  # built: the replay prints PyTorch's figures beside its own
                res = subprocess.run([nofrag_bin, "replay", "--json", base + ".csv.gz"], capture_output=True, text=True)
                self.assertEqual(res.returncode, 0, res.stderr)
                out = json.loads(res.stdout.splitlines()[0])
                self.assertEqual(out["pytorch_reserved_peak_bytes"], 6 << 20)
                self.assertAlmostEqual(out["pytorch_held_over_live"], 2.0)

    def test_no_pytorch_figures_no_sidecar(self):
        torch, _ = scripted_torch(two_steps())  # a stand-in that reports no peaks
        self.use_torch(torch)
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "job")
            rec = record.Recorder(base).start()
            rec.step()
            self.assertIsNone(rec.stop()["pytorch_file"])
            self.assertFalse(os.path.exists(base + ".pytorch"))

    def test_full_ring_is_refused(self):
        torch, _ = scripted_torch(two_steps())
        self.use_torch(torch)
        with tempfile.TemporaryDirectory() as d:
            rec = record.Recorder(os.path.join(d, "job"), max_entries=len(two_steps()))
            rec.start()
            rec.step()
            with self.assertRaisesRegex(record.RecordingError, "lost the oldest events"):
                rec.stop()
            self.assertFalse(os.path.exists(os.path.join(d, "job.csv.gz")))

    def test_context_manager_writes_nothing_when_the_job_fails(self):
        torch, calls = scripted_torch(two_steps())
        self.use_torch(torch)
        with tempfile.TemporaryDirectory() as d:
            base = os.path.join(d, "job")
            with self.assertRaises(KeyError):
                with record.Recorder(base) as rec:
                    rec.step()
                    raise KeyError("the job failed")
            self.assertFalse(os.path.exists(base + ".csv.gz"))
        self.assertEqual(calls, ["all", None])

    def test_bad_arguments(self):
        for bad in ("", "job.csv.gz"):
            with self.assertRaises(ValueError):
                record.Recorder(bad)
        with self.assertRaises(ValueError):
            record.Recorder("job", max_entries=0)


if __name__ == "__main__":
    unittest.main()
