// Communicator tests with every rank a thread of this process: the conformance suite against the
// in-process backend and (a fast variant) Gloo over loopback, failure and timeout behaviour,
// Work semantics, and the reduction kernels. Real multi-process runs: gloo_multiprocess_test.
#include "engine/dist/communicator.h"

#include <atomic>
#include <cmath>
#include <functional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/core/half.h"
#include "engine/dist/reduce.h"
#include "tests/engine/dist/conformance.h"
#include "tests/testing.h"

namespace kiln::dist {
namespace {

// Runs body(rank) on `world` threads and joins them.
void OnThreads(int world, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(body, r);
  for (std::thread& t : threads) t.join();
}

CommunicatorOptions Options(absl::Duration timeout = absl::Seconds(120)) {
  CommunicatorOptions options;
  options.timeout = timeout;
  options.tcp_host = "127.0.0.1";
  return options;
}

// Creates one communicator per rank thread, runs body(rank, comm) on each, then destroys them.
void WithWorld(const std::string& backend, int world, const CommunicatorOptions& options,
               const std::function<void(int, Communicator&)>& body, Store* store = nullptr) {
  InProcessStore own_store;
  if (store == nullptr) store = &own_store;
  std::vector<std::string> errors(world);
  OnThreads(world, [&](int rank) {
    auto comm = MakeCommunicator(backend, store, rank, world, options);
    if (!comm.ok()) {
      errors[rank] = comm.status().ToString();
      return;
    }
    body(rank, **comm);
  });
  for (const std::string& e : errors) INFO(e);
  for (const std::string& e : errors) REQUIRE(e.empty());
}

void RunConformanceOnThreads(const std::string& backend, std::vector<int64_t> sizes) {
  for (int world : {1, 2, 3, 4}) {
    InProcessStore store;
    std::vector<testing::ConformanceReport> reports(world);
    testing::ConformanceOptions conformance;
    conformance.sizes = sizes;
    conformance.store = &store;
    WithWorld(
        backend, world, Options(),
        [&](int rank, Communicator& comm) {
          reports[rank] = testing::RunConformance(comm, conformance);
          // Leave together (see dist_test_worker.cc).
          const absl::Status done = comm.Barrier()->Wait(absl::Seconds(120));
          if (!done.ok()) reports[rank].failures.push_back(done.ToString());
        },
        &store);
    for (int r = 0; r < world; ++r) {
      INFO(backend << " world " << world << " rank " << r << ": " << reports[r].checks
                   << " checks\n"
                   << absl::StrJoin(reports[r].failures, "\n"));
      CHECK(reports[r].failures.empty());
      CHECK(reports[r].checks > 100);
    }
  }
}

TEST_CASE("conformance: in-process backend, worlds 1-4, sizes up to 1000003", "[dist]") {
  RunConformanceOnThreads("inprocess", {0, 1, 7, 1000, 1000003});
}

TEST_CASE("conformance: Gloo backend with ranks as threads (fast variant)", "[dist]") {
  RunConformanceOnThreads("gloo", {0, 1, 7, 1000, 65537});
}

TEST_CASE("digest: two in-process runs reduce to identical bits", "[dist]") {
  std::vector<uint64_t> digests[2];
  std::vector<std::string> errors(3);
  for (auto& run : digests) {
    run.assign(3, 0);
    WithWorld("inprocess", 3, Options(), [&](int rank, Communicator& comm) {
      run[rank] = testing::ReductionDigest(comm, 100003, &errors[rank]);
    });
  }
  for (const std::string& e : errors) CHECK(e.empty());
  REQUIRE(digests[0] == digests[1]);
}

// A rank that stops issuing collectives makes the others fail within the timeout, with an error
// that names the collective, the rank and the sequence number; afterwards they fail fast.
void CheckStragglerTimeout(const std::string& backend) {
  const absl::Duration timeout = absl::Milliseconds(800);
  const int world = 3;
  std::vector<absl::Status> warmup(world), first(world), second(world);
  std::vector<absl::Duration> took(world), fast(world);
  std::atomic<int> finished{0};
  WithWorld(backend, world, Options(timeout), [&](int rank, Communicator& comm) {
    Tensor t = Tensor::Full({1000}, 1.0f, DType::kF32);                         // (1000)
    warmup[rank] = comm.AllReduce(t, ReduceOp::kSum)->Wait(absl::Seconds(30));  // #0 for all
    if (rank == world - 1) {
      // The straggler never issues #1, but keeps its connections open until the others are done
      // (closing them would make the peers fail at once instead of timing out).
      while (finished < world - 1) absl::SleepFor(absl::Milliseconds(5));
      return;
    }
    const absl::Time start = absl::Now();
    first[rank] = comm.AllReduce(t, ReduceOp::kSum)->Wait(absl::Seconds(60));
    took[rank] = absl::Now() - start;
    const absl::Time again = absl::Now();
    second[rank] = comm.Barrier()->Wait(absl::Seconds(60));
    fast[rank] = absl::Now() - again;
    ++finished;
  });
  for (const absl::Status& s : warmup) REQUIRE(s.ok());
  for (int rank = 0; rank < world - 1; ++rank) {
    INFO(backend << " rank " << rank << ": " << first[rank] << " after "
                 << absl::FormatDuration(took[rank]) << "; then " << second[rank]);
    REQUIRE_FALSE(first[rank].ok());
    CHECK(absl::StrContains(first[rank].message(),
                            absl::StrCat("AllReduce #1 on rank ", rank, " of 3 (", backend)));
    CHECK(took[rank] < timeout + absl::Seconds(3));
    CHECK_FALSE(second[rank].ok());
    CHECK(absl::StrContains(second[rank].message(), "failed earlier"));
    CHECK(fast[rank] < absl::Seconds(1));
  }
  // Whoever timed out first says so; the in-process hub also names the missing rank.
  const bool any_deadline =
      absl::IsDeadlineExceeded(first[0]) || absl::IsDeadlineExceeded(first[1]);
  CHECK(any_deadline);
  if (backend == "inprocess")
    CHECK(absl::StrContains(first[0].message(), "rank(s) 2 did not join"));
}

TEST_CASE("failure: in-process peers time out on a straggler and then fail fast", "[dist]") {
  CheckStragglerTimeout("inprocess");
}

TEST_CASE("failure: Gloo peers (threads) time out on a straggler and then fail fast", "[dist]") {
  CheckStragglerTimeout("gloo");
}

TEST_CASE("failure: mismatched collectives are reported on the in-process backend", "[dist]") {
  std::vector<absl::Status> status(2);
  WithWorld("inprocess", 2, Options(absl::Seconds(5)), [&](int rank, Communicator& comm) {
    Tensor t = Tensor::Zeros({4}, DType::kF32);  // (4)
    status[rank] = (rank == 0 ? comm.AllReduce(t, ReduceOp::kSum) : comm.Broadcast(t, 0))
                       ->Wait(absl::Seconds(30));
  });
  for (const absl::Status& s : status) {
    INFO(s);
    CHECK(absl::StrContains(s.message(), "collective mismatch"));
  }
}

TEST_CASE("creation fails, not hangs, when a peer never shows up", "[dist]") {
  for (const std::string backend : {"inprocess", "gloo"}) {
    InProcessStore store;
    const absl::Time start = absl::Now();
    auto comm = MakeCommunicator(backend, &store, 0, 2, Options(absl::Milliseconds(500)));
    INFO(backend << ": " << comm.status());
    REQUIRE_FALSE(comm.ok());
    CHECK(absl::Now() - start < absl::Seconds(10));
    CHECK(absl::StrContains(comm.status().message(), "rank 0 of 2"));
  }
}

TEST_CASE("Work: a short wait gives up without cancelling the operation", "[dist]") {
  std::atomic<bool> gave_up{false};
  absl::Status early, late, other;
  bool completed_early = true, completed_late = false;
  std::vector<float> result;
  WithWorld("inprocess", 2, Options(), [&](int rank, Communicator& comm) {
    Tensor t = Tensor::Full({8}, 1.0f + rank, DType::kF32);  // (8)
    if (rank == 1) {
      while (!gave_up) absl::SleepFor(absl::Milliseconds(1));
      other = comm.AllReduce(t, ReduceOp::kSum)->Wait(absl::Seconds(30));
      return;
    }
    auto work = comm.AllReduce(t, ReduceOp::kSum);
    early = work->Wait(absl::Milliseconds(50));
    completed_early = work->IsCompleted();
    gave_up = true;
    late = work->Wait(absl::Seconds(30));
    completed_late = work->IsCompleted();
    result = t.ToFloats();
  });
  INFO(early);
  CHECK_FALSE(completed_early);
  CHECK(completed_late);
  CHECK(other.ok());
  CHECK(result == std::vector<float>(8, 3.0f));
  CHECK(absl::IsDeadlineExceeded(early));
  CHECK(absl::StrContains(early.message(), "AllReduce #0 on rank 0 of 2 (inprocess"));
  CHECK(late.ok());
}

TEST_CASE("communicators on one store get separate key spaces", "[dist]") {
  InProcessStore store;
  std::vector<std::string> problems(2);
  OnThreads(2, [&](int rank) {
    for (int i = 0; i < 3; ++i) {  // three generations, e.g. a restarted gang reusing the store
      auto comm = MakeCommunicator("gloo", &store, rank, 2, Options(absl::Seconds(30)));
      if (!comm.ok()) {
        problems[rank] += comm.status().ToString();
        return;
      }
      Tensor t = Tensor::Full({5}, static_cast<float>(i), DType::kF32);  // (5)
      absl::Status status = (*comm)->AllReduce(t, ReduceOp::kSum)->Wait(absl::Seconds(30));
      if (status.ok()) status = (*comm)->Barrier()->Wait(absl::Seconds(30));
      if (!status.ok()) problems[rank] += status.ToString();
      if (t.ToFloats() != std::vector<float>(5, 2.0f * i)) {
        problems[rank] += absl::StrCat(" generation ", i, ": wrong sum");
      }
    }
  });
  for (const std::string& p : problems) {
    INFO(p);
    CHECK(p.empty());
  }
}

TEST_CASE("reduce kernels: bf16/f16 compute in f32 and round once; max propagates NaN", "[dist]") {
  // 1 + 2^-8 is a tie in bf16 and rounds to even (1.0); 1 + 3 * 2^-8 rounds up to 1 + 2^-6.
  const BFloat16 a[2] = {BFloat16(1.0f), BFloat16(1.0f)};
  const BFloat16 b[2] = {BFloat16(1.0f / 256), BFloat16(3.0f / 256)};
  BFloat16 out[2];
  ReduceArrays(DType::kBF16, ReduceOp::kSum, out, a, b, 2);
  CHECK(static_cast<float>(out[0]) == 1.0f);
  CHECK(static_cast<float>(out[1]) == 1.0f + 4.0f / 256);
  const Float16 h[2] = {Float16(2048.0f), Float16(-1.0f)};
  const Float16 g[2] = {Float16(1.0f), Float16(NAN)};
  Float16 hout[2];
  ReduceArrays(DType::kF16, ReduceOp::kSum, hout, h, g, 2);
  CHECK(static_cast<float>(hout[0]) == 2048.0f);  // 2049 is a tie in f16: even is 2048
  CHECK(std::isnan(static_cast<float>(hout[1])));
  ReduceArrays(DType::kF16, ReduceOp::kMax, hout, h, g, 2);
  CHECK(static_cast<float>(hout[0]) == 2048.0f);
  CHECK(std::isnan(static_cast<float>(hout[1])));
  const float f[3] = {1.0f, NAN, -2.0f}, e[3] = {NAN, 0.0f, -3.0f};
  float fout[3];
  ReduceArrays(DType::kF32, ReduceOp::kMax, fout, f, e, 3);
  CHECK(std::isnan(fout[0]));
  CHECK(std::isnan(fout[1]));
  CHECK(fout[2] == -2.0f);
  int64_t big[1] = {int64_t{1} << 62}, one[1] = {1};
  ReduceArrays(DType::kI64, ReduceOp::kSum, big, big, one, 1);
  CHECK(big[0] == (int64_t{1} << 62) + 1);
  BFloat16 third[1] = {BFloat16(1.0f)};
  DivideInPlace(DType::kBF16, third, 1, 3);
  CHECK(third[0].bits == BFloat16(1.0f / 3.0f).bits);
}

}  // namespace
}  // namespace kiln::dist
