// Submit-to-first-step: each job is submitted to an idle kilnd (SubmitJob RPC start = time 0) and
// watched with WatchJob until rank 0's first step metric arrives; the job's STARTING and RUNNING
// events (kilnd's clock, this machine's) split the time into launch, registration and the first
// step. The peer is kiln-train on the same spec, timed from fork to its first metrics line.
#include "bench/first_step.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "bench/kilnd_bench.h"
#include "client/client.h"
#include "proto/spec_loader.h"

namespace kiln::bench {
namespace {

absl::Time ToTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }

// Jobs run far longer than the measurement: a job that ended quickly would report its first step
// with its last (the worker flushes everything at exit) and hide the reporting path's latency.
constexpr int64_t kSteps = 100000;

struct Sample {
  double rpc_ms = 0;       // the SubmitJob call
  double launch_ms = 0;    // submit -> kilnd launched the workers (STARTING)
  double register_ms = 0;  // -> every rank registered (RUNNING)
  double first_ms = 0;     // -> rank 0's first step metric arrived at the watcher
};

// Submits `spec`, watches it until its first step metric arrives, cancels it and watches it to its
// end; false if something else happened.
bool RunOne(client::KilnClient* client, const v1::JobSpec& spec, Sample* out) {
  v1::SubmitJobRequest request;
  *request.mutable_spec() = spec;
  const absl::Time t0 = absl::Now();
  absl::StatusOr<v1::SubmitJobResponse> r = client->Submit(request);
  out->rpc_ms = Ms(absl::Now() - t0);
  if (!r.ok()) {
    std::fprintf(stderr, "submit: %s\n", r.status().ToString().c_str());
    return false;
  }
  bool first = false;
  v1::JobState state = v1::QUEUED;
  const absl::Status s =
      client->Watch(r->job().id(), /*history=*/true, [&](const v1::JobUpdate& u) {
        if (u.has_metrics() && u.metrics().step() >= 1 && !first) {
          first = true;
          out->first_ms = Ms(absl::Now() - t0);
          (void)client->Cancel(r->job().id());  // enough; the next job starts on an idle kilnd
        }
        if (u.has_event()) {
          const std::string& m = u.event().message();
          if (m.rfind("STARTING:", 0) == 0) out->launch_ms = Ms(ToTime(u.event().time()) - t0);
          if (m.rfind("RUNNING:", 0) == 0) out->register_ms = Ms(ToTime(u.event().time()) - t0);
        }
        if (u.has_job()) state = u.job().state();
        return !client::IsTerminal(state);
      });
  return s.ok() && first && state == v1::CANCELLED;
}

// kiln-train `spec_file` (nproc ranks): milliseconds from fork to its first metrics line.
double TrainerFirstStep(const FirstStepOptions& o, const std::string& spec_file, int nproc,
                        int threads, const std::string& metrics) {
  std::filesystem::remove(metrics);
  const absl::Time t0 = absl::Now();
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);  // its ranks join this group: one signal stops them all
    if (freopen((o.dir + "/kiln-train.log").c_str(), "a", stderr) == nullptr) _exit(126);
    const std::string n = absl::StrCat(nproc), t = absl::StrCat(threads);
    execl(o.trainer.c_str(), o.trainer.c_str(), spec_file.c_str(), "--nproc", n.c_str(),
          "--threads", t.c_str(), "--steps", absl::StrCat(kSteps).c_str(), "--metrics-out",
          metrics.c_str(), nullptr);
    _exit(127);
  }
  double first_ms = -1;
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (ReadFile(metrics).find('\n') != std::string::npos) {
      first_ms = Ms(absl::Now() - t0);
      // The launcher does not forward signals to its ranks (posix_spawn, same process group).
      kill(-pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  return first_ms;
}

std::string Row(const std::string& name, const std::vector<Sample>& samples,
                const std::vector<double>& trainer) {
  std::vector<double> rpc, launch, reg, first;
  for (const Sample& s : samples) {
    rpc.push_back(s.rpc_ms);
    launch.push_back(s.launch_ms);
    reg.push_back(s.register_ms);
    first.push_back(s.first_ms);
  }
  const double total = Percentile(first, 0.5), peer = Percentile(trainer, 0.5);
  return absl::StrFormat("| %s | %.1f | %.0f | %.0f | **%.0f** | %.0f | %.0f | %.1fx |\n", name,
                         Percentile(rpc, 0.5), Percentile(launch, 0.5), Percentile(reg, 0.5), total,
                         peer, total - peer, peer > 0 ? total / peer : 0.0);
}

std::string List(const std::vector<double>& v) {
  std::vector<std::string> parts;
  for (double x : v) parts.push_back(absl::StrFormat("%.0f", x));
  return absl::StrJoin(parts, ", ");
}

// The spec's YAML with its `resources:` line replaced by two data-parallel workers; empty if the
// spec has no such line.
std::string TwoWorkers(const std::string& yaml) {
  const size_t at = yaml.rfind("\nresources:");
  if (at == std::string::npos) return "";
  const size_t end = yaml.find('\n', at + 1);
  return yaml.substr(0, at + 1) + "resources: {workers: 2, device: cpu}\nparallel: {dp: 2}\n" +
         (end == std::string::npos ? "" : yaml.substr(end + 1));
}

}  // namespace

std::string FirstStepSection(const FirstStepOptions& o) {
  std::filesystem::create_directories(o.dir);
  absl::StatusOr<v1::JobSpec> one = spec::LoadSpecFile(o.spec);
  if (!one.ok()) return "first-step benchmark: " + one.status().ToString() + "\n";
  const std::string two_file = o.dir + "/two-workers.yaml";
  std::ofstream(two_file) << TwoWorkers(ReadFile(o.spec));
  absl::StatusOr<v1::JobSpec> two = spec::LoadSpecFile(two_file);
  if (!two.ok()) return "first-step benchmark: " + two.status().ToString() + "\n";
  one->mutable_train()->set_steps(kSteps);
  two->mutable_train()->set_steps(kSteps);

  constexpr int kSlots = 2;
  const int threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / kSlots);
  const std::string load = LoadAverage();
  Kilnd k = StartKilnd(o.kilnd, o.dir + "/kilnd", kSlots, o.worker);
  client::ClientOptions copts;
  copts.server = k.address;
  auto client = *client::KilnClient::Connect(copts);
  (void)client->Nodes();  // connected
  std::string rows, samples_text;
  int failed = 0;
  for (const auto& [name, spec, file, nproc] :
       {std::make_tuple(std::string("1 worker"), *one, o.spec, 1),
        std::make_tuple(std::string("2 workers (dp 2, Gloo)"), *two, two_file, 2)}) {
    std::vector<Sample> samples;
    std::vector<double> trainer;
    for (int i = 0; i < o.jobs; ++i) {
      Sample s;
      if (RunOne(client.get(), spec, &s)) {
        samples.push_back(s);
      } else {
        ++failed;
      }
      const double t = TrainerFirstStep(o, file, nproc, threads, o.dir + "/metrics.jsonl");
      if (t >= 0) trainer.push_back(t);
    }
    rows += Row(name, samples, trainer);
    std::vector<double> first;
    for (const Sample& s : samples) first.push_back(s.first_ms);
    absl::StrAppend(&samples_text, "\n- ", name, ": submit -> first step ", List(first),
                    " ms; kiln-train -> first step ", List(trainer), " ms.");
  }
  StopKilnd(k);
  return absl::StrFormat(
      "\n## Submit to first training step (bench/control_plane)\n\n"
      "Machine: %s. Built with -c opt; other builds share the machine (1-minute load average at "
      "the start: %s, at the end: %s).\n\n"
      "Spec: `configs/%s` (a 3-layer MLP on the synthetic task) with train.steps raised to %d, "
      "submitted %d times per row to an idle kilnd (--slots 2, %d thread%s per worker) with the "
      "real kiln-worker, and cancelled once its first step is seen. Times in ms from the start of "
      "the SubmitJob call, medians; \"launched\" and \"registered\" are kilnd's STARTING and "
      "RUNNING events; \"first step\" is rank 0's step-1 metric arriving through WatchJob (each "
      "column counts from the submit). The peer, model build included, is `kiln-train` on the "
      "same spec in the same run, alternating with the jobs (same threads; `--nproc 2` for two "
      "ranks), from fork to its first metrics line.%s\n\n"
      "| job | SubmitJob RPC | workers launched | all registered | first step | kiln-train: "
      "first step | first step - kiln-train | first step / kiln-train |\n"
      "|---|---|---|---|---|---|---|---|\n%s%s\n\n"
      "Target: submit to first step < 2 s plus the model build (kiln-train's time to its first "
      "step).\n",
      Machine(), load, LoadAverage(), std::filesystem::path(o.spec).filename().string(), kSteps,
      o.jobs, threads, threads == 1 ? "" : "s",
      failed > 0 ? absl::StrFormat(" %d job(s) did not succeed and are left out.", failed) : "",
      rows, samples_text);
}

}  // namespace kiln::bench
