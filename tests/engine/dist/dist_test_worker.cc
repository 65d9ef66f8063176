// One rank of a multi-process test (or a store host), started by gloo_multiprocess_test and
// store_test. Flags: --mode=conformance|digest|failure|store_host --rank=R --world=W --port=P
// [--timeout_ms=T]. Results go to stdout/stderr and to the test's TcpStore; the exit code says
// whether this rank saw what it had to (0) or not (1: checks failed, 2: setup failed).
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/dist/communicator.h"
#include "engine/dist/tcp_store.h"
#include "tests/engine/dist/conformance.h"

namespace kiln::dist {
namespace {

std::map<std::string, std::string> ParseFlags(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) continue;
    const size_t eq = arg.find('=');
    flags[arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2)] =
        eq == std::string::npos ? "" : arg.substr(eq + 1);
  }
  return flags;
}

int IntFlag(const std::map<std::string, std::string>& flags, const std::string& name, int dflt) {
  auto it = flags.find(name);
  int value = dflt;
  if (it != flags.end() && !absl::SimpleAtoi(it->second, &value)) {
    std::fprintf(stderr, "bad --%s=%s\n", name.c_str(), it->second.c_str());
    std::exit(2);
  }
  return value;
}

int Die(const absl::Status& status) {
  std::fprintf(stderr, "setup failed: %s\n", status.ToString().c_str());
  return 2;
}

// Hosts a TcpStore and reports its port on stdout, then serves until killed.
int StoreHost() {
  TcpStoreOptions options;
  options.is_host = true;
  auto store = TcpStore::Create(options);
  if (!store.ok()) return Die(store.status());
  std::printf("port=%d\n", (*store)->port());
  std::fflush(stdout);
  for (;;) absl::SleepFor(absl::Seconds(1));
}

int Conformance(Communicator& comm, Store& store) {
  testing::ConformanceOptions options;
  options.store = &store;
  const testing::ConformanceReport report = testing::RunConformance(comm, options);
  for (const std::string& failure : report.failures) {
    std::fprintf(stderr, "FAIL %s\n", failure.c_str());
  }
  std::printf("rank %d: %d checks, %zu failures\n", comm.rank(), report.checks,
              report.failures.size());
  return report.failures.empty() && report.checks > 0 ? 0 : 1;
}

int Digest(Communicator& comm, Store& store) {
  std::string error;
  const uint64_t digest = testing::ReductionDigest(comm, 300007, &error);
  if (!error.empty()) {
    std::fprintf(stderr, "%s", error.c_str());
    return 1;
  }
  const absl::Status set = store.Set(absl::StrCat("digest/", comm.rank()), absl::StrCat(digest));
  return set.ok() ? 0 : Die(set);
}

// Every rank loops on 4 MiB all-reduces until one fails (the test kills or stops a rank).
// Survivors record the failing Work's error and how long its Wait took, then check that the
// next operation fails fast.
int Failure(Communicator& comm, Store& store) {
  Tensor t = Tensor::Zeros({1 << 20}, DType::kF32);  // (1M) f32
  const absl::Time give_up = absl::Now() + absl::Seconds(120);
  for (int i = 0; absl::Now() < give_up; ++i) {
    const absl::Time start = absl::Now();
    const absl::Status status = comm.AllReduce(t, ReduceOp::kSum)->Wait(absl::Seconds(120));
    const absl::Duration took = absl::Now() - start;
    if (!status.ok()) {
      const std::string r = absl::StrCat(comm.rank());
      const absl::Time after_start = absl::Now();
      const absl::Status after = comm.Barrier()->Wait(absl::Seconds(120));
      const absl::Duration after_took = absl::Now() - after_start;
      std::printf("rank %s: %s (after %s)\nnext: %s (after %s)\n", r.c_str(),
                  status.ToString().c_str(), absl::FormatDuration(took).c_str(),
                  after.ToString().c_str(), absl::FormatDuration(after_took).c_str());
      std::fflush(stdout);
      absl::Status set = store.Set("error/" + r, status.ToString());
      if (set.ok()) set = store.Set("error_ms/" + r, absl::StrCat(absl::ToInt64Milliseconds(took)));
      if (set.ok()) set = store.Set("next/" + r, after.ToString());
      if (set.ok()) {
        set = store.Set("next_ms/" + r, absl::StrCat(absl::ToInt64Milliseconds(after_took)));
      }
      return set.ok() ? 0 : Die(set);
    }
    if (i == 0) {
      absl::StatusOr<int64_t> added = store.Add("running", 1);
      if (!added.ok()) return Die(added.status());
    }
  }
  std::fprintf(stderr, "no failure observed within 120 s\n");
  return 1;
}

int Main(int argc, char** argv) {
  const auto flags = ParseFlags(argc, argv);
  const std::string mode = flags.count("mode") ? flags.at("mode") : "";
  if (mode == "store_host") return StoreHost();

  TcpStoreOptions store_options;
  store_options.port = IntFlag(flags, "port", 0);
  auto store = TcpStore::Create(store_options);
  if (!store.ok()) return Die(store.status());
  const int rank = IntFlag(flags, "rank", 0), world = IntFlag(flags, "world", 1);
  CommunicatorOptions options;
  options.tcp_host = "127.0.0.1";
  options.timeout = absl::Milliseconds(IntFlag(flags, "timeout_ms", 300000));
  auto comm = MakeCommunicator("gloo", store->get(), rank, world, options);
  if (!comm.ok()) return Die(comm.status());

  int rc = 2;
  if (mode == "conformance") rc = Conformance(**comm, **store);
  if (mode == "digest") rc = Digest(**comm, **store);
  if (mode == "failure") rc = Failure(**comm, **store);
  if (rc == 0 && mode != "failure") {
    // Leave together so that no rank closes its connections while a peer still reads.
    const absl::Status done = (*comm)->Barrier()->Wait(absl::Seconds(300));
    if (!done.ok()) return Die(done);
  }
  std::fflush(stdout);
  return rc;
}

}  // namespace
}  // namespace kiln::dist

int main(int argc, char** argv) { return kiln::dist::Main(argc, argv); }
