// bench/control_plane: kilnd under load, through its real gRPC protocol.
//  1. SubmitJob latency (p50/p99) and throughput for 1,000 submissions (one client, then four
//     concurrent clients), against ListNodes on the same connection as the peer (a bare RPC).
//  2. kilnd CPU and RSS while 500 workers heartbeat once a second. The 500 worker processes are
//     launched by kilnd itself (a tiny script standing in for kiln-worker that hands its per-job
//     token to this program and sleeps); this program then registers and heartbeats for them with
//     kiln-worker's own CoordinatorLink (a heartbeat stream each), one connection per worker as
//     real workers have; then again with unary Heartbeat calls, the peer. The simulated workers
//     are the load; kilnd is what is measured.
//  3. Time from submit to the first training step of a tiny job with the real kiln-worker, against
//     kiln-train's time to its first step on the same spec (bench/first_step.h).
// Usage: bazel run //bench:control_plane -- [--results FILE] [--heartbeat-s 30] [--trials 3]
//            [--first-step-jobs 7]      (0 skips a part: --trials 0, --heartbeat-s 0, ...)
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench/first_step.h"
#include "bench/kilnd_bench.h"
#include "client/client.h"
#include "grpcpp/create_channel.h"
#include "kiln/v1/cluster_service.grpc.pb.h"
#include "proto/spec_loader.h"
#include "worker/coordinator_link.h"

namespace kiln::bench {
namespace {

constexpr int kSubmissions = 1000;
constexpr int kWorkers = 500;

struct Latencies {
  std::vector<double> ms;
  double seconds = 0;
};

// `threads` clients, each on its own channel, making `total` calls between them.
template <typename Call>
Latencies Measure(int threads, int total, Call call) {
  Latencies out;
  std::vector<std::vector<double>> per(threads);
  const absl::Time start = absl::Now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = t; i < total; i += threads) {
        const absl::Time s = absl::Now();
        call(t, i);
        per[t].push_back(absl::ToDoubleMilliseconds(absl::Now() - s));
      }
    });
  }
  for (std::thread& th : pool) th.join();
  out.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (auto& v : per) out.ms.insert(out.ms.end(), v.begin(), v.end());
  return out;
}

constexpr char kSpec[] = R"(name: bench
model: {family: gpt2, n_layer: 2, n_head: 4, d_model: 64, vocab_size: 256, max_seq_len: 64}
data: {train: /data/tiny/train.bin, val: /data/tiny/val.bin}
train: {steps: 100, micro_batch: 8, precision: bf16, eval_every: 50}
checkpoint: {every_steps: 50}
labels: {team: bench}
)";

struct SubmitTrial {
  Latencies one, four, peer;
  double rss = 0;
  std::string load;
};

// One trial on a fresh kilnd (queue only: --slots 0), 1,000 submissions per workload.
SubmitTrial RunSubmitTrial(const std::string& kilnd_binary, const std::string& dir,
                           const std::string& sync) {
  Kilnd k = StartKilnd(kilnd_binary, dir, 0, "/bin/false", sync);
  client::ClientOptions options;
  options.server = k.address;
  std::vector<std::unique_ptr<client::KilnClient>> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(*client::KilnClient::Connect(options));
  spec::LoadOptions load;
  load.base_dir = "/";
  const v1::JobSpec spec = *spec::LoadSpecYaml(kSpec, load);
  for (auto& c : clients) (void)c->Nodes();  // connect
  auto submit = [&](int t, int i) {
    v1::SubmitJobRequest request;
    *request.mutable_spec() = spec;
    request.set_submission_id(
        absl::StrCat("bench-", t, "-", i, "-", absl::ToUnixNanos(absl::Now())));
    absl::StatusOr<v1::SubmitJobResponse> r = clients[t]->Submit(request);
    if (!r.ok()) std::fprintf(stderr, "submit: %s\n", r.status().ToString().c_str());
  };
  SubmitTrial trial;
  trial.load = LoadAverage();
  trial.peer = Measure(1, kSubmissions, [&](int t, int) { (void)clients[t]->Nodes(); });
  trial.one = Measure(1, kSubmissions, submit);
  trial.four = Measure(4, kSubmissions, submit);
  trial.rss = RssMiB(k.pid);
  StopKilnd(k);
  return trial;
}

std::string Row(const std::string& name, const Latencies& l) {
  return absl::StrFormat("| %s | %.2f | %.2f | %.0f |\n", name, Percentile(l.ms, 0.5),
                         Percentile(l.ms, 0.99), kSubmissions / l.seconds);
}

// The median of `trials` fresh-kilnd trials, by single-client throughput.
SubmitTrial MedianTrial(const std::string& kilnd_binary, const std::string& dir,
                        const std::string& sync, int trials, std::string* loads) {
  std::vector<SubmitTrial> runs;
  for (int i = 0; i < trials; ++i) {
    runs.push_back(RunSubmitTrial(kilnd_binary, absl::StrCat(dir, "/submit-", sync, "-", i), sync));
    *loads += (loads->empty() ? "" : ", ") + runs.back().load;
  }
  std::sort(runs.begin(), runs.end(), [](const SubmitTrial& a, const SubmitTrial& b) {
    return a.one.seconds < b.one.seconds;
  });
  return runs[runs.size() / 2];
}

std::string SubmitSection(const std::string& kilnd_binary, const std::string& dir, int trials) {
  std::string loads;
  const SubmitTrial full = MedianTrial(kilnd_binary, dir, "full", trials, &loads);
  const SubmitTrial normal = MedianTrial(kilnd_binary, dir, "normal", trials, &loads);
  std::string out = Row("SubmitJob, 1 client (default --sync full)", full.one) +
                    Row("SubmitJob, 4 clients (default --sync full)", full.four) +
                    Row("SubmitJob, 1 client (--sync normal)", normal.one) +
                    Row("SubmitJob, 4 clients (--sync normal)", normal.four) +
                    Row("peer: ListNodes (bare RPC), 1 client", full.peer);
  absl::StrAppend(
      &out,
      absl::StrFormat(
          "\nEach row is the median of %d trials on a fresh kilnd (1-minute load average at each "
          "start: %s). SubmitJob p50 / ListNodes p50 = %.1fx with --sync full (validation plus a "
          "durable SQLite commit, fsynced, per job) and %.1fx with --sync normal (no fsync: safe "
          "from a kilnd crash, not from an OS crash). kilnd RSS after %d queued jobs: %.0f MiB.\n",
          trials, loads,
          Percentile(full.one.ms, 0.5) / std::max(1e-9, Percentile(full.peer.ms, 0.5)),
          Percentile(normal.one.ms, 0.5) / std::max(1e-9, Percentile(normal.peer.ms, 0.5)),
          2 * kSubmissions, full.rss));
  return out;
}

// The stand-in worker kilnd launches: it leaves its identity and token for us, then sleeps.
std::string WriteSimWorker(const std::string& dir) {
  const std::string path = dir + "/sim-worker.sh";
  std::ofstream(path)
      << "#!/bin/sh\n"
         "echo \"$$ $KILN_WORKER_TOKEN\" > \"$KILN_BENCH_DIR/tokens/$KILN_RANK.tmp\"\n"
         "mv \"$KILN_BENCH_DIR/tokens/$KILN_RANK.tmp\" "
         "\"$KILN_BENCH_DIR/tokens/$KILN_RANK\"\n"
         "exec sleep 100000\n";
  std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  return path;
}

// kilnd's CPU, RSS and the heartbeat latencies over one load phase.
struct HeartbeatLoad {
  double cpu = 0;  // fraction of one core over the phase
  double rss = 0;  // MiB at its end
  std::vector<double> window_cpu;
  std::string loads;
  std::vector<double> latency_ms;
  int errors = 0;
};

// 500 heartbeats a second, evenly spread, for `seconds`, each by `heartbeat(rank, step)`; kilnd's
// CPU sampled every 10 s.
template <typename Heartbeat>
HeartbeatLoad RunHeartbeats(pid_t kilnd, int seconds, Heartbeat heartbeat) {
  constexpr int kThreads = 10;
  HeartbeatLoad out;
  const double cpu0 = CpuSeconds(kilnd);
  const absl::Time t0 = absl::Now();
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    double last = cpu0;
    for (int w = 1; w * 10 <= seconds && sampling.load(); ++w) {
      absl::SleepFor(t0 + absl::Seconds(10 * w) - absl::Now());
      const double now = CpuSeconds(kilnd);
      out.window_cpu.push_back((now - last) / 10);
      last = now;
      out.loads += (out.loads.empty() ? "" : ", ") + LoadAverage();
    }
  });
  std::vector<std::vector<double>> latency(kThreads);
  std::atomic<int> errors{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t) {
    pool.emplace_back([&, t] {
      for (int s = 0; s < seconds; ++s) {
        for (int r = t; r < kWorkers; r += kThreads) {
          absl::SleepFor(t0 + absl::Seconds(s) + absl::Seconds(1) * r / kWorkers - absl::Now());
          const absl::Time start = absl::Now();
          if (!heartbeat(r, s)) ++errors;
          latency[t].push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
        }
      }
    });
  }
  for (std::thread& th : pool) th.join();
  sampling = false;
  sampler.join();
  out.cpu = (CpuSeconds(kilnd) - cpu0) / absl::ToDoubleSeconds(absl::Now() - t0);
  out.rss = RssMiB(kilnd);
  for (auto& v : latency) out.latency_ms.insert(out.latency_ms.end(), v.begin(), v.end());
  out.errors = errors.load();
  return out;
}

std::string HeartbeatRow(const std::string& load, const HeartbeatLoad& r) {
  return absl::StrFormat("| %s | %.1f %% of one core | %.0f MiB | %.2f / %.2f ms | %d |\n", load,
                         100 * r.cpu, r.rss, Percentile(r.latency_ms, 0.5),
                         Percentile(r.latency_ms, 0.99), r.errors);
}

std::string Windows(const HeartbeatLoad& r) {
  std::string windows;
  for (double c : r.window_cpu)
    windows += absl::StrFormat("%s%.1f %%", windows.empty() ? "" : ", ", 100 * c);
  return absl::StrFormat("%s (median %.1f %%; 1-minute load average: %s)", windows,
                         100 * Percentile(r.window_cpu, 0.5), r.loads);
}

std::string HeartbeatSection(const std::string& kilnd_binary, const std::string& dir, int seconds) {
  const std::string hb_dir = dir + "/heartbeat";
  std::filesystem::create_directories(hb_dir + "/tokens");
  Kilnd k = StartKilnd(kilnd_binary, hb_dir, kWorkers, WriteSimWorker(hb_dir));
  client::ClientOptions options;
  options.server = k.address;
  auto user = *client::KilnClient::Connect(options);
  v1::SubmitJobRequest request;
  request.set_spec_yaml(
      absl::StrCat("model: {family: mlp, n_layer: 1, d_in: 4, d_ff: 8, vocab_size: 2}\n"
                   "train: {steps: 1000000, micro_batch: 1}\nresources: {workers: ",
                   kWorkers, "}\n"));
  request.set_base_dir("/");
  absl::StatusOr<v1::SubmitJobResponse> job = user->Submit(request);
  if (!job.ok()) return "heartbeat benchmark: submit failed: " + job.status().ToString() + "\n";
  const std::string job_id = job->job().id();
  // Wait for every stand-in worker's token.
  std::vector<std::pair<int, std::string>> ranks(kWorkers);  // pid, token
  for (int r = 0; r < kWorkers; ++r) {
    const std::string file = absl::StrCat(hb_dir, "/tokens/", r);
    while (!std::filesystem::exists(file)) absl::SleepFor(absl::Milliseconds(20));
    std::istringstream(ReadFile(file)) >> ranks[r].first >> ranks[r].second;
  }
  // Each simulated worker has kiln-worker's own CoordinatorLink, on a connection of its own as
  // real workers (each its own process) have.
  std::vector<std::unique_ptr<worker::CoordinatorLink>> links;
  for (int r = 0; r < kWorkers; ++r) {
    worker::LinkOptions link;
    link.server = k.address;
    link.token = ranks[r].second;
    link.worker.set_job_id(job_id);
    link.worker.set_rank(r);
    link.worker.set_attempt(1);
    link.own_connection = true;
    links.push_back(*worker::CoordinatorLink::Create(link));
  }
  std::atomic<int> errors{0};
  Measure(10, kWorkers, [&](int t, int r) {
    // Registered with the stand-in's pid (kilnd watches the process it launched).
    auto context = links[r]->Context(absl::Seconds(5));
    v1::RegisterRequest reg;
    *reg.mutable_worker() = links[r]->worker();
    reg.set_pid(ranks[r].first);
    v1::RegisterResponse response;
    if (!links[r]->stub()->Register(context.get(), reg, &response).ok()) ++errors;
  });
  // kilnd's own cost with the workers registered but silent (monitor thread, pollers).
  absl::SleepFor(absl::Seconds(1));
  const double idle0 = CpuSeconds(k.pid);
  absl::SleepFor(absl::Seconds(5));
  const double idle = (CpuSeconds(k.pid) - idle0) / 5;
  // What kiln-worker does: one heartbeat stream per worker (opened by the first heartbeat).
  const HeartbeatLoad stream = RunHeartbeats(k.pid, seconds, [&](int r, int step) {
    return links[r]->Heartbeat(step, "train", absl::Seconds(5)).ok();
  });
  // Peer: the same workers making the unary Heartbeat call instead (Kiln's earlier design, and
  // what a request-per-heartbeat protocol costs).
  const HeartbeatLoad unary = RunHeartbeats(k.pid, seconds, [&](int r, int step) {
    auto context = links[r]->Context(absl::Seconds(5));
    v1::HeartbeatRequest hb;
    *hb.mutable_worker() = links[r]->worker();
    hb.set_step(seconds + step);
    hb.set_phase("train");
    v1::HeartbeatResponse response;
    return links[r]->stub()->Heartbeat(context.get(), hb, &response).ok();
  });
  absl::StatusOr<v1::Job> state = user->GetJob(job_id);
  (void)user->Cancel(job_id, 1);
  absl::SleepFor(absl::Seconds(2));
  links.clear();
  StopKilnd(k);
  return absl::StrFormat(
      "%s%s| peer: the same %d workers registered, silent | %.1f %% of one core | | | %d |\n"
      "\nStream / unary kilnd CPU: %.2f. kilnd CPU per 10 s window, stream: %s; unary: %s. Job "
      "state during the run: %s (every rank registered and heartbeating).\n",
      HeartbeatRow(absl::StrCat(kWorkers, " workers x 1 heartbeat/s for ", seconds,
                                " s, HeartbeatStream (kiln-worker)"),
                   stream),
      HeartbeatRow(absl::StrCat("peer: the same, unary Heartbeat calls"), unary), kWorkers,
      100 * idle, errors.load(), stream.cpu / unary.cpu, Windows(stream), Windows(unary),
      state.ok() ? v1::JobState_Name(state->state()) : "unknown");
}

int Main(int argc, char** argv) {
  std::string kilnd = "scheduler/kilnd";
  FirstStepOptions first_step;
  first_step.worker = "worker/kiln-worker";
  first_step.trainer = "worker/kiln-train";
  first_step.spec = "configs/mlp-tiny.yaml";
  std::string results;
  int seconds = 30;
  int trials = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--kilnd") kilnd = argv[i + 1];
    if (flag == "--results") results = argv[i + 1];
    if (flag == "--heartbeat-s") seconds = std::stoi(argv[i + 1]);  // 0 = skip
    if (flag == "--trials") trials = std::max(0, std::stoi(argv[i + 1]));
    if (flag == "--first-step-jobs") first_step.jobs = std::max(0, std::stoi(argv[i + 1]));
  }
  kilnd = std::filesystem::absolute(kilnd);
  first_step.kilnd = kilnd;
  first_step.worker = std::filesystem::absolute(first_step.worker);
  first_step.trainer = std::filesystem::absolute(first_step.trainer);
  first_step.spec = std::filesystem::absolute(first_step.spec);
  const std::string dir =
      absl::StrCat(std::filesystem::temp_directory_path().string(), "/kiln-bench-", getpid());
  std::string section;
  if (trials > 0 || seconds > 0) {
    section = "\n## Control plane (bench/control_plane)\n\nMachine: " + Machine() +
              ". kilnd built with -c opt; client and load generator on the same machine, which "
              "other builds share (hence the load averages).\n";
  }
  if (trials > 0) {
    section += "\n| workload | p50 ms | p99 ms | calls/s |\n|---|---|---|---|\n";
    section += SubmitSection(kilnd, dir, trials);
  }
  if (seconds > 0) {
    section +=
        "\n| load | kilnd CPU | kilnd RSS | heartbeat p50 / p99 | errors |\n"
        "|---|---|---|---|---|\n";
    section += HeartbeatSection(kilnd, dir, seconds);
  }
  if (trials > 0 || seconds > 0) {
    section +=
        "\nTargets: >= 500 submissions/s, p99 < 20 ms, < 10 % of one core for 500 "
        "heartbeating workers.\n";
  }
  if (first_step.jobs > 0) {
    first_step.dir = dir + "/first-step";
    section += FirstStepSection(first_step);
  }
  std::fputs(section.c_str(), stdout);
  if (!results.empty()) std::ofstream(results, std::ios::app) << section;
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace kiln::bench

int main(int argc, char** argv) { return kiln::bench::Main(argc, argv); }
