// All-reduce bus bandwidth through our Communicator (Gloo backend) against a plain Gloo
// all-reduce loop (gloo::allreduce with the same context settings) in the same processes, for
// 1 KiB - 256 MiB of f32 and worlds of 2 and 4 local processes. Run without flags it launches the
// ranks itself and prints a Markdown table per world (median of several iterations).
#include "gloo/allreduce.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/dist/communicator.h"
#include "engine/dist/gloo_store.h"
#include "engine/dist/process.h"
#include "engine/dist/tcp_store.h"
#include "gloo/barrier.h"
#include "gloo/math.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"

namespace kiln::bench {
namespace {

using dist::Communicator;
using dist::CommunicatorOptions;

constexpr absl::Duration kTimeout = absl::Seconds(600);

std::map<std::string, std::string> ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    if (arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      flags[arg.substr(2, eq - 2)] = arg.substr(eq + 1);
    }
  }
  return flags;
}

int Flag(const std::map<std::string, std::string>& flags, const std::string& name, int dflt) {
  auto it = flags.find(name);
  int v = dflt;
  if (it != flags.end()) (void)absl::SimpleAtoi(it->second, &v);
  return v;
}

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown CPU";
}

std::string HumanBytes(int64_t bytes) {
  if (bytes >= (1 << 20)) return absl::StrCat(bytes >> 20, " MiB");
  return absl::StrCat(bytes >> 10, " KiB");
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Note [Fair comparison]
// Both sides use the same kind of gloo context (tcp device on 127.0.0.1, connectFullMesh through
// the same store, same timeout), the ring algorithm, and f32 sums (ours: our reduction kernel on
// the communication thread; plain: gloo::sum<float> on the calling thread). Every timed op starts
// after a plain gloo barrier so that ranks start together, and the two sides alternate which goes
// first in each sample. A sample is a loop of back-to-back ops (each waited on before the next);
// rank 0's median time per op is reported; bus bandwidth = bytes * 2(w-1)/w / t.
int RunRank(int rank, int world, int port, int max_mib) {
  dist::TcpStoreOptions store_options;
  store_options.port = port;
  auto store = dist::TcpStore::Create(store_options);
  if (!store.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, store.status().ToString().c_str());
    return 2;
  }
  CommunicatorOptions options;
  options.tcp_host = "127.0.0.1";
  options.timeout = kTimeout;
  auto comm = dist::MakeCommunicator("gloo", store->get(), rank, world, options);
  if (!comm.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, comm.status().ToString().c_str());
    return 2;
  }
  // The plain gloo context, built the way MakeGlooBackend builds its own.
  gloo::transport::tcp::attr attr;
  attr.hostname = "127.0.0.1";
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, world);
  context->setTimeout(std::chrono::milliseconds(absl::ToInt64Milliseconds(kTimeout)));
  dist::PrefixStore plain_keys(store->get(), "plain/");
  dist::GlooStore gloo_store(&plain_keys, kTimeout);
  context->connectFullMesh(gloo_store, device);

  // A third context, used only to line the ranks up before each timed op, so that neither
  // measured side inherits the barrier's traffic on its own sockets.
  auto sync_device = gloo::transport::tcp::CreateDevice(attr);
  auto sync = std::make_shared<gloo::rendezvous::Context>(rank, world);
  sync->setTimeout(std::chrono::milliseconds(absl::ToInt64Milliseconds(kTimeout)));
  dist::PrefixStore sync_keys(store->get(), "sync/");
  dist::GlooStore sync_store(&sync_keys, kTimeout);
  sync->connectFullMesh(sync_store, sync_device);

  uint32_t tag = 0, sync_tag = 0;
  auto barrier = [&] {
    gloo::BarrierOptions opts(sync);
    opts.setTag(sync_tag++);
    gloo::barrier(opts);
  };

  if (rank == 0) {
    std::printf(
        "\n### world %d (%d processes)\n\n"
        "| size | ours: bus GB/s | plain Gloo: bus GB/s | ours / plain | ours: median ms | "
        "plain: median ms | samples x ops |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        world, world);
  }
  bool all_equal = true;
  for (int64_t bytes = 1 << 10; bytes <= (int64_t{max_mib} << 20); bytes *= 4) {
    const int64_t n = bytes / 4;
    Tensor ours = Tensor::Full({n}, 1.0f, DType::kF32);      // (n) f32, through the Communicator
    std::vector<float> plain(static_cast<size_t>(n), 1.0f);  // (n) f32, through gloo directly
    // One sample times `batch` back-to-back all-reduces (a loop, as a training step issues
    // them), so that millisecond scheduling noise does not swamp small sizes.
    const int batch = static_cast<int>(std::clamp<int64_t>((int64_t{64} << 20) / bytes, 1, 64));
    const int iterations = bytes <= (16 << 20) ? 25 : (bytes <= (64 << 20) ? 9 : 5);
    const int warmup = 2;
    std::vector<double> ours_s, plain_s;
    for (int it = 0; it < warmup + iterations; ++it) {
      double t_ours = 0, t_plain = 0;
      for (int side = 0; side < 2; ++side) {
        const bool run_ours = (side == 0) == (it % 2 == 0);
        barrier();
        const absl::Time start = absl::Now();
        for (int b = 0; b < batch; ++b) {
          if (run_ours) {
            const absl::Status status = (*comm)->AllReduce(ours, dist::ReduceOp::kSum)->Wait();
            if (!status.ok()) {
              std::fprintf(stderr, "rank %d: %s\n", rank, status.ToString().c_str());
              return 1;
            }
          } else {
            gloo::AllreduceOptions opts(context);
            opts.setOutput(plain.data(), plain.size());
            opts.setReduceFunction(
                static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
            opts.setAlgorithm(gloo::AllreduceOptions::Algorithm::RING);
            opts.setTag(tag++);
            gloo::allreduce(opts);
          }
        }
        (run_ours ? t_ours : t_plain) = absl::ToDoubleSeconds(absl::Now() - start) / batch;
      }
      if (it >= warmup) {
        ours_s.push_back(t_ours);
        plain_s.push_back(t_plain);
      }
    }
    // Both buffers saw the same number of sums (powers of `world`, inf once they overflow).
    all_equal = all_equal && std::equal(plain.begin(), plain.end(), ours.data<float>());
    if (rank == 0) {
      const double factor = 2.0 * (world - 1) / world * static_cast<double>(bytes) / 1e9;
      const double mo = Median(ours_s), mp = Median(plain_s);
      std::printf("| %s | %.3f | %.3f | %.2f | %.3f | %.3f | %d x %d |\n",
                  HumanBytes(bytes).c_str(), factor / mo, factor / mp, mp / mo, mo * 1e3, mp * 1e3,
                  iterations, batch);
      std::fflush(stdout);
    }
  }
  barrier();
  if (!all_equal) {
    std::fprintf(stderr, "rank %d: ours and plain results differ\n", rank);
    return 1;
  }
  return 0;
}

int Launch(const std::vector<int>& worlds, int max_mib) {
  char date[64];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d", std::localtime(&now));
  std::printf("All-reduce of f32, Communicator(gloo) vs plain gloo::allreduce (ring), %s\n", date);
  std::printf("machine: %s, %u cores\n", CpuModel().c_str(), std::thread::hardware_concurrency());
  std::fflush(stdout);
  int rc = 0;
  for (int world : worlds) {
    dist::TcpStoreOptions options;
    options.is_host = true;
    auto store = dist::TcpStore::Create(options);
    if (!store.ok()) {
      std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
      return 2;
    }
    std::vector<dist::Process> ranks;
    for (int r = 0; r < world; ++r) {
      dist::ProcessOptions p;
      p.argv = {dist::SelfExecutable(), absl::StrCat("--rank=", r), absl::StrCat("--world=", world),
                absl::StrCat("--port=", (*store)->port()), absl::StrCat("--max_mib=", max_mib)};
      if (r != 0) p.output_path = absl::StrCat("/tmp/kiln_bench_allreduce_rank", r, ".log");
      auto process = dist::Process::Spawn(p);
      if (!process.ok()) {
        std::fprintf(stderr, "%s\n", process.status().ToString().c_str());
        return 2;
      }
      ranks.push_back(std::move(*process));
    }
    for (int r = 0; r < world; ++r) {
      absl::StatusOr<int> code = ranks[r].Wait(absl::Hours(1));
      if (!code.ok() || *code != 0) {
        std::fprintf(
            stderr, "world %d rank %d failed (%s)\n", world, r,
            code.ok() ? absl::StrCat("exit ", *code).c_str() : code.status().ToString().c_str());
        rc = 1;
      }
    }
  }
  return rc;
}

}  // namespace
}  // namespace kiln::bench

int main(int argc, char** argv) {
  const auto flags = kiln::bench::ParseFlags(argc, argv);
  const int max_mib = kiln::bench::Flag(flags, "max_mib", 256);
  if (flags.count("rank")) {
    return kiln::bench::RunRank(kiln::bench::Flag(flags, "rank", 0),
                                kiln::bench::Flag(flags, "world", 1),
                                kiln::bench::Flag(flags, "port", 0), max_mib);
  }
  std::vector<int> worlds;
  for (absl::string_view w :
       absl::StrSplit(flags.count("worlds") ? flags.at("worlds") : "2,4", ',')) {
    int v = 0;
    if (absl::SimpleAtoi(w, &v) && v > 0) worlds.push_back(v);
  }
  return kiln::bench::Launch(worlds, max_mib);
}
