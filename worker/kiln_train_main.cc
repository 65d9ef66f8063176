// kiln-train: trains a job spec in this one process, without a coordinator (development, parity
// tests, benchmarks). Prints a progress line per step to stderr, writes JSON metrics with
// --metrics-out, and exits 0 on success, 2 on bad input (one line saying what and where), 1 on
// other failures.
//
//   kiln-train JOB.yaml [--steps N] [--init-from PATH] [--metrics-out FILE.jsonl]
//              [--save-final PATH.safetensors] [--resume DIR] [--threads N] [--nproc N] [--profile]
//              [--collective-timeout SECONDS]
//              [--sample | --sample-only] [--prompt TEXT] [--sample-tokens N] [--top-k K]
//              [--temperature T]
// --sample generates text after training; --sample-only skips training and generates from the
// newest checkpoint in checkpoint.dir (or --resume DIR).
//
// --nproc N starts N local rank processes (data parallel, parallel.dp must be N) that meet through
// a TCP store this launcher hosts; if one fails the others are stopped and its exit code returned.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/core/parallel.h"
#include "engine/dist/process.h"
#include "engine/dist/tcp_store.h"
#include "engine/train/device_select.h"
#include "engine/train/session.h"
#include "engine/train/trainer.h"
#include "proto/spec_loader.h"

namespace {

struct Args {
  std::string spec_path;
  int nproc = 1;                         // launcher: start this many ranks
  std::string store_addr;                // a rank: the launcher's store, "host:port"
  std::vector<std::string> passthrough;  // arguments every rank receives
  kiln::train::TrainOptions train;
  bool sample = false;
  bool sample_only = false;  // no training: sample from the newest checkpoint
  std::string prompt = "\n";
  int sample_tokens = 300;
  int top_k = 1;
  float temperature = 1.0f;
};

constexpr const char* kUsage =
    "usage: kiln-train JOB.yaml [--steps N] [--init-from PATH] [--metrics-out FILE.jsonl]\n"
    "                  [--save-final PATH.safetensors] [--resume DIR] [--threads N] [--nproc N]\n"
    "                  [--profile] [--collective-timeout SECONDS]\n"
    "                  [--sample | --sample-only] [--prompt TEXT] [--sample-tokens N] [--top-k K]\n"
    "                  [--temperature T]\n";

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (i + 1 >= argc) return absl::InvalidArgumentError(flag + " needs a value");
      return std::string(argv[++i]);
    };
    auto integer = [&](int64_t lo) -> absl::StatusOr<int64_t> {
      KILN_ASSIGN_OR_RETURN(std::string v, value());
      int64_t n;
      if (!absl::SimpleAtoi(v, &n) || n < lo) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, ": \"", v, "\" is not an integer >= ", lo));
      }
      return n;
    };
    const size_t before = static_cast<size_t>(i);
    bool rank_only = false;
    if (flag == "--nproc") {
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(1));
      a.nproc = static_cast<int>(n);
      continue;
    } else if (flag == "--rank") {
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(0));
      a.train.rank = static_cast<int>(n);
      rank_only = true;
    } else if (flag == "--world-size") {
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(1));
      a.train.world_size = static_cast<int>(n);
      rank_only = true;
    } else if (flag == "--store") {
      KILN_ASSIGN_OR_RETURN(a.store_addr, value());
      rank_only = true;
    } else if (flag == "--steps") {
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(1));
      a.train.steps = n;
    } else if (flag == "--init-from") {
      KILN_ASSIGN_OR_RETURN(a.train.init_from, value());
    } else if (flag == "--metrics-out") {
      KILN_ASSIGN_OR_RETURN(a.train.metrics_out, value());
    } else if (flag == "--save-final") {
      KILN_ASSIGN_OR_RETURN(a.train.save_final, value());
    } else if (flag == "--resume") {
      KILN_ASSIGN_OR_RETURN(a.train.resume_dir, value());
    } else if (flag == "--threads") {
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(1));
      a.train.threads = static_cast<int>(n);
    } else if (flag == "--profile") {
      a.train.profile = true;
    } else if (flag == "--collective-timeout") {
      // How long a rank waits on a collective before failing it with the collective named
      // (default 300 s): the bound when a peer dies where the transport cannot tell (Note [A dead
      // peer during a send] in engine/dist/gloo_backend.cc).
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(1));
      a.train.collective_timeout_s = static_cast<double>(n);
    } else if (flag == "--sample") {
      a.sample = true;
    } else if (flag == "--sample-only") {
      a.sample = a.sample_only = true;
    } else if (flag == "--prompt") {
      KILN_ASSIGN_OR_RETURN(a.prompt, value());
    } else if (flag == "--sample-tokens") {
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(1));
      a.sample_tokens = static_cast<int>(n);
    } else if (flag == "--top-k") {
      KILN_ASSIGN_OR_RETURN(int64_t n, integer(1));
      a.top_k = static_cast<int>(n);
    } else if (flag == "--temperature") {
      KILN_ASSIGN_OR_RETURN(std::string v, value());
      if (!absl::SimpleAtof(v, &a.temperature) || !(a.temperature > 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--temperature: \"", v, "\" is not positive"));
      }
    } else if (flag == "-h" || flag == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (!flag.empty() && flag[0] == '-') {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", flag));
    } else if (a.spec_path.empty()) {
      a.spec_path = flag;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument ", flag));
    }
    if (!rank_only) {
      for (size_t k = before; k <= static_cast<size_t>(i); ++k) a.passthrough.push_back(argv[k]);
    }
  }
  if (a.spec_path.empty()) return absl::InvalidArgumentError("missing JOB.yaml");
  return a;
}

// Byte-level models print text; others print token ids.
void PrintSample(const std::vector<int32_t>& prompt, const std::vector<int32_t>& out, int vocab) {
  std::string text;
  for (int32_t t : prompt) text.push_back(static_cast<char>(t));
  for (int32_t t : out) {
    if (vocab <= 256) {
      text.push_back(static_cast<char>(t));
    } else {
      absl::StrAppend(&text, t, " ");
    }
  }
  std::printf("---- sample ----\n%s\n----------------\n", text.c_str());
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "kiln-train: %s\n", std::string(status.message()).c_str());
  return kiln::train::ExitCodeFor(status);
}

// --nproc: host the store, start one process per rank, and stop them all when one fails.
int Launch(const Args& args) {
  kiln::dist::TcpStoreOptions so;
  so.is_host = true;
  auto host = kiln::dist::TcpStore::Create(so);
  if (!host.ok()) return Fail(host.status());
  const std::string addr = absl::StrCat("127.0.0.1:", (*host)->port());
  std::vector<kiln::dist::Process> ranks;
  for (int r = 0; r < args.nproc; ++r) {
    kiln::dist::ProcessOptions po;
    po.argv = {kiln::dist::SelfExecutable()};
    for (const std::string& a : args.passthrough) {
      if (a != "--sample") po.argv.push_back(a);
    }
    for (const std::string& a :
         {std::string("--rank"), std::to_string(r), std::string("--world-size"),
          std::to_string(args.nproc), std::string("--store"), addr}) {
      po.argv.push_back(a);
    }
    auto p = kiln::dist::Process::Spawn(po);
    if (!p.ok()) return Fail(p.status());
    ranks.push_back(std::move(*p));
  }
  int result = 0;
  std::vector<int> codes(ranks.size(), -1);
  for (size_t finished = 0; finished < ranks.size();) {
    for (size_t r = 0; r < ranks.size(); ++r) {
      if (codes[r] >= 0) continue;
      auto code = ranks[r].Wait(absl::Milliseconds(50));
      if (!code.ok()) continue;  // still running
      codes[r] = *code;
      ++finished;
      if (*code != 0 && result == 0) {
        result = *code;
        std::fprintf(stderr, "kiln-train: rank %zu exited with %d; stopping the other ranks\n", r,
                     *code);
        for (size_t o = 0; o < ranks.size(); ++o) {
          if (codes[o] < 0) (void)ranks[o].Signal(SIGTERM);
        }
      }
    }
  }
  if (result != 0) {
    for (size_t r = 0; r < ranks.size(); ++r) {
      if (codes[r] > 128) {
        std::fprintf(stderr, "kiln-train: rank %zu: killed by signal %d\n", r, codes[r] - 128);
      } else {
        std::fprintf(stderr, "kiln-train: rank %zu: exit code %d\n", r, codes[r]);
      }
    }
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  kiln::EnsurePassiveOpenMpWait(argv);
  // A file-size limit (a full quota) must surface as a write error with a message, not a signal.
  std::signal(SIGXFSZ, SIG_IGN);
  absl::StatusOr<Args> args = ParseArgs(argc, argv);
  if (!args.ok()) {
    std::fprintf(stderr, "kiln-train: %s\n%s", std::string(args.status().message()).c_str(),
                 kUsage);
    return 2;
  }
  absl::StatusOr<kiln::v1::JobSpec> spec = kiln::spec::LoadSpecFile(args->spec_path);
  if (!spec.ok()) return Fail(spec.status());
  // `device: cuda` without a usable GPU fails here, before any rank starts or data is read.
  if (absl::Status device = kiln::train::CheckTrainingDevice(*spec); !device.ok()) {
    return Fail(device);
  }
  if (args->sample_only) {
    // Sample below, from what a finished run (any world size or ZeRO stage) left behind.
  } else if (args->nproc > 1) {
    const int code = Launch(*args);
    if (code != 0 || !args->sample) return code;
  } else {
    std::unique_ptr<kiln::dist::TcpStore> store;
    if (!args->store_addr.empty()) {
      kiln::dist::TcpStoreOptions so;
      const size_t colon = args->store_addr.rfind(':');
      so.host = args->store_addr.substr(0, colon);
      so.port = std::atoi(args->store_addr.substr(colon + 1).c_str());
      auto client = kiln::dist::TcpStore::Create(so);
      if (!client.ok()) return Fail(client.status());
      store = std::move(*client);
      args->train.store = store.get();
    }
    const absl::Status trained = kiln::train::RunTraining(*spec, args->train, nullptr);
    if (!trained.ok()) return Fail(trained);
    if (args->train.world_size > 1) return 0;  // the launcher samples
  }
  if (args->sample) {
    // Sampling reloads the final checkpoint (or the saved weights) into a fresh session.
    kiln::train::TrainOptions o = args->train;
    o.metrics_out.clear();
    o.rank = 0;
    o.world_size = 1;
    o.store = nullptr;
    spec->mutable_parallel()->clear_dp();  // one process samples, whatever layout trained
    spec->mutable_parallel()->set_zero_stage(0);
    auto session = kiln::train::TrainingSession::Create(*spec, o);
    if (!session.ok()) return Fail(session.status());
    absl::Status loaded;
    if (!args->train.resume_dir.empty() || !spec->checkpoint().dir().empty()) {
      loaded = (*session)->Resume(!args->train.resume_dir.empty() ? args->train.resume_dir
                                                                  : spec->checkpoint().dir());
    } else if (!args->train.save_final.empty()) {
      o.init_from = args->train.save_final;
      session = kiln::train::TrainingSession::Create(*spec, o);
      if (!session.ok()) return Fail(session.status());
      loaded = (*session)->InitializeWeights();
    } else {
      loaded = absl::InvalidArgumentError(
          "--sample needs checkpoint.dir in the spec or --save-final to find the trained weights");
    }
    if (!loaded.ok()) return Fail(loaded);
    std::vector<int32_t> prompt;
    for (unsigned char c : args->prompt) prompt.push_back(c);
    auto out =
        (*session)->Generate(prompt, args->sample_tokens, args->top_k, args->temperature, 1234);
    if (!out.ok()) return Fail(out.status());
    PrintSample(prompt, *out, (*session)->model_config().vocab_size);
  }
  return 0;
}
