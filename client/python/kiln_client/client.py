"""kiln_client.Client: the JobService verbs of the `kiln` CLI for notebooks and scripts.

    from kiln_client import Client
    kiln = Client()                          # $KILN_SERVER or 127.0.0.1:7070, $KILN_TOKEN
    job = kiln.submit(path="job.yaml")
    job = kiln.wait(job.id)                  # follows the job to its end
    print(job.state, [p.loss for p in kiln.metrics(job.id)])

Errors raise KilnError with the gRPC status code name and kilnd's one-line message (for a bad
spec, the field path); an unreachable kilnd reads "cannot reach kilnd at HOST:PORT".
"""

import json
import os
import time
import uuid

import grpc
from google.protobuf import json_format

from kiln.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, jobs_pb2

DEFAULT_SERVER = "127.0.0.1:7070"
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED")


class KilnError(Exception):
    """A failed call: `code` is the gRPC status name (e.g. "INVALID_ARGUMENT")."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def to_dict(message):
    """A proto message as a dict with .proto field names (enums by name: "RUNNING")."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def state_name(state):
    return jobs_pb2.JobState.Name(state)


class Client:
    def __init__(self, server=None, token=None, tls_ca=None, timeout=10.0):
        self.server = server or os.environ.get("KILN_SERVER") or DEFAULT_SERVER
        self.token = token if token is not None else os.environ.get("KILN_TOKEN", "")
        self.timeout = timeout
        tls_ca = tls_ca or os.environ.get("KILN_TLS_CA")
        if tls_ca:
            with open(tls_ca, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            self._channel = grpc.secure_channel(self.server, credentials)
        else:
            self._channel = grpc.insecure_channel(self.server)
        self._stub = job_service_pb2_grpc.JobServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- plumbing ---

    def _metadata(self):
        return [("authorization", "Bearer " + self.token)] if self.token else []

    def _error(self, e):
        code = e.code()
        message = e.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE and not message.startswith("kilnd"):
            message = "cannot reach kilnd at " + self.server
        return KilnError(code.name, message)

    def _call(self, method, request, timeout=None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata())
        except grpc.RpcError as e:
            raise self._error(e) from None

    def _stream(self, method, request):
        try:
            for item in method(request, metadata=self._metadata()):
                yield item
        except grpc.RpcError as e:
            raise self._error(e) from None

    # --- verbs ---

    def submit(self, spec=None, *, path=None, yaml=None, name=None, priority=None,
               submission_id=None, base_dir=None):
        """Submits a job from a JobSpec, a dict, YAML text, or a YAML file (`path`). kilnd parses
        and validates it; relative paths resolve against the file's folder (or `base_dir`, or the
        current directory). Idempotent per `submission_id` (a fresh one by default)."""
        request = job_service_pb2.SubmitJobRequest(submission_id=submission_id or
                                                   "py-" + uuid.uuid4().hex)
        if path is not None:
            with open(path, "r", encoding="utf-8") as f:
                request.spec_yaml = f.read()
            base_dir = base_dir or os.path.dirname(os.path.abspath(path))
        elif yaml is not None:
            request.spec_yaml = yaml
        elif isinstance(spec, dict):
            request.spec_yaml = json.dumps(spec)  # JSON is YAML
        elif isinstance(spec, job_pb2.JobSpec):
            request.spec.CopyFrom(spec)
        else:
            raise ValueError("submit() needs spec (JobSpec or dict), yaml= or path=")
        request.base_dir = os.path.abspath(base_dir or os.getcwd())
        if name is not None:
            request.name = name
        if priority is not None:
            request.priority = priority
        return self._call(self._stub.SubmitJob, request).job

    def get(self, job_id, events=False):
        return self._call(self._stub.GetJob,
                          job_service_pb2.GetJobRequest(job_id=job_id, include_events=events))

    def list(self, states=None, limit=0):
        """Jobs, oldest first; `states` are names like "RUNNING"."""
        request = job_service_pb2.ListJobsRequest(page_size=1000)
        for s in states or []:
            request.states.append(jobs_pb2.JobState.Value(s.upper()))
        jobs = []
        while True:
            response = self._call(self._stub.ListJobs, request)
            jobs.extend(response.jobs)
            if limit and len(jobs) >= limit:
                return jobs[:limit]
            if not response.next_page_token:
                return jobs
            request.page_token = response.next_page_token

    def cancel(self, job_id, grace_s=0.0, reason=""):
        return self._call(self._stub.CancelJob, job_service_pb2.CancelJobRequest(
            job_id=job_id, grace_s=grace_s, reason=reason))

    def watch(self, job_id, history=False):
        """Yields JobUpdate messages (job snapshots, events, step metrics) until the job ends."""
        return self._stream(self._stub.WatchJob,
                            job_service_pb2.WatchJobRequest(job_id=job_id, history=history))

    def wait(self, job_id, timeout=None):
        """Blocks until the job ends (reconnecting if kilnd restarts); returns the final Job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                for update in self.watch(job_id):
                    if update.HasField("job") and state_name(update.job.state) in TERMINAL_STATES:
                        return update.job
                    if deadline is not None and time.monotonic() > deadline:
                        raise KilnError("DEADLINE_EXCEEDED", "timed out waiting for " + job_id)
            except KilnError as e:
                if e.code != "UNAVAILABLE":
                    raise
            job = None
            try:
                job = self.get(job_id)
            except KilnError as e:
                if e.code != "UNAVAILABLE":
                    raise
            if job is not None and state_name(job.state) in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise KilnError("DEADLINE_EXCEEDED", "timed out waiting for " + job_id)
            self.wait_for_server(1.0)

    def wait_for_server(self, timeout):
        """Asks the channel to reconnect and waits up to `timeout` s; True once connected. (Calls
        fail fast while kilnd is down, and may keep doing so after it returns until something
        asks the channel to reconnect.)"""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False

    def logs(self, job_id, rank=None, follow=False, offset=0):
        """Yields (rank, text) chunks: one rank's log from `offset`, or all ranks merged by line."""
        request = job_service_pb2.StreamLogsRequest(job_id=job_id, follow=follow)
        if rank is not None:
            request.rank = rank
            request.offset = offset
        for chunk in self._stream(self._stub.StreamLogs, request):
            yield chunk.rank, chunk.data.decode("utf-8", errors="replace")

    def metrics(self, job_id, after_step=0):
        """Every step metric point of rank 0 after `after_step` (all attempts)."""
        points = []
        while True:
            response = self._call(self._stub.GetJobMetrics, job_service_pb2.GetJobMetricsRequest(
                job_id=job_id, after_step=after_step))
            points.extend(response.points)
            if not response.truncated or not response.points:
                return points
            after_step = response.points[-1].step

    def nodes(self):
        return list(self._call(self._stub.ListNodes, job_service_pb2.ListNodesRequest()).nodes)
