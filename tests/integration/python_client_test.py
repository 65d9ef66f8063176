"""The Python client (client/python) against a real kilnd launching the real kiln-worker (a small
MLP trained on the trainer's synthetic task): submit, wait, list, get, metrics, logs, cancel, nodes,
idempotency, spec errors with field paths, an unreachable server, and kilnd's grpc.health.v1
(NOT_SERVING while draining) and reflection.

Prints the KILN_TEST_SUMMARY line that tools/test.sh adds up."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

from kiln_client import Client, KilnError, state_name

RUNFILES = os.path.join(os.environ.get("TEST_SRCDIR", "."), "kiln")
KILND = os.path.join(RUNFILES, "scheduler/kilnd")
WORKER = os.path.join(RUNFILES, "worker/kiln-worker")


def mlp_spec(steps, workers=1):
    """A small MLP on the synthetic task, data parallel over `workers` ranks (as MlpJob in
    harness.h)."""
    spec = {
        "name": "py",
        "model": {"family": "mlp", "n_layer": 3, "d_in": 16, "d_ff": 64, "vocab_size": 4},
        "train": {"steps": steps, "micro_batch": 32, "seed": 7,
                  "optimizer": {"name": "adamw", "lr": 3.0e-3}},
        "resources": {"workers": workers},
    }
    if workers > 1:
        spec["parallel"] = {"dp": workers}
    return spec


def long_step_spec():
    """One optimizer step of hundreds of accumulated micro-batches (seconds): the trainer only
    stops between steps, so it cannot honour a stop within a short grace (as LongStepJob)."""
    return {
        "name": "py-long-steps",
        "model": {"family": "mlp", "n_layer": 4, "d_in": 64, "d_ff": 512, "vocab_size": 4},
        "train": {"steps": 1000, "micro_batch": 256, "grad_accum": 500, "seed": 7},
    }


class Kilnd:
    def __init__(self, name, grace_s=3):
        self.dir = tempfile.mkdtemp(prefix=name, dir=os.environ.get("TEST_TMPDIR"))
        port_file = os.path.join(self.dir, "ports")
        self.log = open(os.path.join(self.dir, "kilnd.log"), "w")
        self.proc = subprocess.Popen(
            [KILND, "--listen", "127.0.0.1:0", "--state-dir", os.path.join(self.dir, "state"),
             "--port-file", port_file, "--slots", "2", "--grace-s", str(grace_s),
             "--worker-binary", WORKER], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(port_file):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("kilnd did not start")
            time.sleep(0.02)
        with open(port_file) as f:
            ports = dict(line.split("=") for line in f.read().split())
        self.address = "127.0.0.1:" + ports["grpc"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def health(address):
    """grpc.health.v1.Health/Check with raw bytes: b'\\x08\\x01' SERVING, b'\\x08\\x02' NOT_SERVING."""
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
        return check(b"", timeout=5)


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.kilnd = Kilnd("py")
        cls.client = Client(cls.kilnd.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.kilnd.stop()

    def test_submit_wait_metrics_logs(self):
        job = self.client.submit(mlp_spec(12, workers=2))
        self.assertTrue(job.id.startswith("job-"))
        done = self.client.wait(job.id, timeout=120)
        self.assertEqual("SUCCEEDED", state_name(done.state))
        points = self.client.metrics(job.id)
        self.assertEqual(list(range(1, 13)), [p.step for p in points])
        self.assertLess(points[-1].loss, points[0].loss)
        text = "".join(t for _, t in self.client.logs(job.id))
        self.assertIn("step 12/12", text)  # rank 0 prints the step lines
        self.assertIn("rank 1/2", text)
        self.assertEqual(2, text.count("kiln-worker: training finished"))
        rank1 = "".join(t for _, t in self.client.logs(job.id, rank=1))
        self.assertIn("registered: %s rank 1/2" % job.id, rank1)
        self.assertNotIn("step 12/12", rank1)
        self.assertIn(job.id, [j.id for j in self.client.list(states=["succeeded"])])
        detail = self.client.get(job.id, events=True)
        self.assertTrue(any("SUCCEEDED" in e.message for e in detail.events))

    def test_submission_is_idempotent(self):
        a = self.client.submit(mlp_spec(3), submission_id="py-same")
        b = self.client.submit(mlp_spec(3), submission_id="py-same")
        self.assertEqual(a.id, b.id)
        self.client.wait(a.id, timeout=120)

    def test_bad_spec_names_the_field(self):
        spec = mlp_spec(3)
        spec["train"]["precision"] = "fp8"
        with self.assertRaises(KilnError) as ctx:
            self.client.submit(spec)
        self.assertEqual("INVALID_ARGUMENT", ctx.exception.code)
        self.assertIn('train.precision: "fp8" is not one of fp32, bf16, fp16', ctx.exception.message)
        with self.assertRaises(KilnError) as ctx:
            self.client.submit(yaml="model: {family: mlp\n")
        self.assertIn("invalid YAML", ctx.exception.message)

    def test_cancel(self):
        job = self.client.submit(mlp_spec(1000000))
        deadline = time.time() + 30
        while self.client.get(job.id).progress.step < 2:
            self.assertLess(time.time(), deadline)
            time.sleep(0.05)
        self.client.cancel(job.id, reason="from python")
        done = self.client.wait(job.id, timeout=30)
        self.assertIn("cancelled: from python", done.reason)

    def test_nodes(self):
        nodes = self.client.nodes()
        self.assertEqual(1, len(nodes))
        self.assertEqual(2, nodes[0].slots)

    def test_unreachable(self):
        with self.assertRaises(KilnError) as ctx:
            Client("127.0.0.1:1").nodes()
        self.assertEqual("cannot reach kilnd at 127.0.0.1:1", ctx.exception.message)

    def test_health_and_reflection(self):
        self.assertEqual(b"\x08\x01", health(self.kilnd.address))
        with grpc.insecure_channel(self.kilnd.address) as channel:
            info = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=lambda b: b, response_deserializer=lambda b: b)
            replies = b"".join(info(iter([b"\x3a\x00"]), timeout=5))  # list_services: ""
        self.assertIn(b"kiln.v1.JobService", replies)
        self.assertIn(b"kiln.v1.ClusterService", replies)

    def test_health_is_not_serving_while_draining(self):
        kilnd = Kilnd("drain")
        try:
            client = Client(kilnd.address)
            job = client.submit(long_step_spec())
            deadline = time.time() + 60
            while [r.phase for r in client.get(job.id).ranks] != ["train"]:
                self.assertLess(time.time(), deadline)
                time.sleep(0.05)
            kilnd.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            self.assertEqual(b"\x08\x02", health(kilnd.address))
            self.assertEqual(0, kilnd.proc.wait(timeout=20))
            client.close()
        finally:
            kilnd.stop()


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    print("KILN_TEST_SUMMARY passed=%d failed=%d skipped=%d" % (passed, failed, skipped))
    sys.exit(1 if failed or result.testsRun == 0 else 0)
