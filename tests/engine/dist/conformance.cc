// The conformance suite. Inputs are small integers (|x| <= 31, i64 with a large per-rank offset)
// so that every partial sum is exact in every dtype, bf16 included: results must then match the
// independently computed expectation bit for bit whatever order a backend reduces in. Random data
// is used separately, for determinism and against a double-precision reference.
#include "tests/engine/dist/conformance.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kiln::dist::testing {
namespace {

constexpr DType kAllDTypes[] = {DType::kF32, DType::kBF16, DType::kF16,
                                DType::kI32, DType::kI64,  DType::kU8};
constexpr DType kReducible[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64};

std::string Name(DType dtype) { return std::string(DTypeName(dtype)); }

// Element i of rank r's data, exactly representable in `dtype`.
int64_t Value(DType dtype, int rank, int64_t i) {
  if (dtype == DType::kU8) return (i * 7 + rank * 13) & 255;
  int64_t v = ((i * 37 + rank * 11 + 5) % 63) - 31;
  if (dtype == DType::kI64) v += (int64_t{rank} + 1) << 33;  // exercise the high bits
  return v;
}

// A (n) tensor holding `values` exactly.
Tensor FromExact(DType dtype, const std::vector<int64_t>& values) {
  const Shape shape = {static_cast<int64_t>(values.size())};
  switch (dtype) {
    case DType::kI32:
      return Tensor::FromVector(std::vector<int32_t>(values.begin(), values.end()), shape);
    case DType::kI64:
      return Tensor::FromVector(values, shape);
    case DType::kU8:
      return Tensor::FromVector(std::vector<uint8_t>(values.begin(), values.end()), shape);
    default:
      return Tensor::FromFloats(std::vector<float>(values.begin(), values.end()), shape, dtype);
  }
}

// Rank r's (count) input: Value(r, i) for i < valid, then zero padding.
Tensor Input(DType dtype, int rank, int64_t count, int64_t valid) {
  std::vector<int64_t> v(static_cast<size_t>(count), 0);
  for (int64_t i = 0; i < std::min(count, valid); ++i) v[i] = Value(dtype, rank, i);
  return FromExact(dtype, v);
}

// Elements [offset, offset + length) of the reduction over ranks of Input(dtype, r, ., valid).
Tensor ExpectedReduction(DType dtype, ReduceOp op, int world, int64_t valid, int64_t offset,
                         int64_t length) {
  std::vector<int64_t> exact(static_cast<size_t>(length), 0);
  for (int64_t j = 0; j < length; ++j) {
    const int64_t i = offset + j;
    if (i >= valid) continue;  // padding: zeros on every rank
    int64_t acc = Value(dtype, 0, i);
    for (int r = 1; r < world; ++r) {
      const int64_t v = Value(dtype, r, i);
      acc = op == ReduceOp::kMax ? std::max(acc, v) : acc + v;
    }
    exact[j] = acc;
  }
  if (op != ReduceOp::kAvg) return FromExact(dtype, exact);
  std::vector<float> mean(exact.size());
  for (size_t j = 0; j < exact.size(); ++j) {
    mean[j] = static_cast<float>(exact[j]) / static_cast<float>(world);  // f32, as documented
  }
  return Tensor::FromFloats(mean, {length}, dtype);
}

// Deterministic pseudo-random floats in [-1, 1) (splitmix64), different per rank and stream.
std::vector<float> RandomFloats(int rank, int stream, int64_t n) {
  uint64_t state = 0x9e3779b97f4a7c15ull * (static_cast<uint64_t>(rank) * 131 + stream + 1);
  std::vector<float> out(static_cast<size_t>(n));
  for (float& x : out) {
    state += 0x9e3779b97f4a7c15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    x = static_cast<float>(z >> 40) / static_cast<float>(1 << 23) - 1.0f;
  }
  return out;
}

class Suite {
 public:
  Suite(Communicator& comm, const ConformanceOptions& options)
      : comm_(comm), options_(options), rank_(comm.rank()), world_(comm.world_size()) {}

  ConformanceReport Run() {
    AllReduce();
    ReduceScatter();
    AllGather();
    Broadcast();
    AllToAll();
    SendRecv();
    Barrier();
    IssueOrder();
    Determinism();
    InvalidArguments();
    return std::move(report_);
  }

 private:
  void Fail(std::string message) { report_.failures.push_back(std::move(message)); }

  bool Await(const std::shared_ptr<Work>& work, const std::string& what) {
    const absl::Status status = work->Wait(options_.wait);
    if (!status.ok()) Fail(absl::StrCat(what, ": ", status.ToString()));
    return status.ok();
  }

  // Bitwise comparison with the first differing element in the message.
  void Compare(const Tensor& actual, const Tensor& expected, const std::string& what) {
    ++report_.checks;
    if (actual.dtype() != expected.dtype() || actual.numel() != expected.numel()) {
      Fail(absl::StrCat(what, ": got ", actual.TypeString(), ", expected ", expected.TypeString()));
      return;
    }
    if (actual.nbytes() == 0 ||
        std::memcmp(actual.raw_data(), expected.raw_data(), actual.nbytes()) == 0) {
      return;
    }
    const std::vector<float> a = actual.ToFloats(), e = expected.ToFloats();
    for (size_t i = 0; i < a.size(); ++i) {
      if (std::memcmp(static_cast<const char*>(actual.raw_data()) + i * actual.element_size(),
                      static_cast<const char*>(expected.raw_data()) + i * actual.element_size(),
                      actual.element_size()) != 0) {
        Fail(absl::StrCat(what, ": element ", i, " is ", a[i], ", expected ", e[i]));
        return;
      }
    }
  }

  std::string Label(absl::string_view op, DType dtype, int64_t n, absl::string_view extra = "") {
    return absl::StrCat("rank ", rank_, "/", world_, " ", op, " ", Name(dtype), "[", n, "]",
                        extra.empty() ? "" : " ", extra);
  }

  void AllReduce() {
    for (DType dtype : kReducible) {
      std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kMax};
      if (IsFloating(dtype)) ops.push_back(ReduceOp::kAvg);
      for (ReduceOp op : ops) {
        // Issue every size before waiting on any: the queue must keep them apart.
        std::vector<std::pair<Tensor, std::shared_ptr<Work>>> issued;
        for (int64_t n : options_.sizes) {
          Tensor t = Input(dtype, rank_, n, n);  // (n)
          issued.emplace_back(t, comm_.AllReduce(t, op));
        }
        for (size_t s = 0; s < issued.size(); ++s) {
          const int64_t n = options_.sizes[s];
          const std::string what = Label("AllReduce", dtype, n, ReduceOpName(op));
          if (!Await(issued[s].second, what)) continue;
          Compare(issued[s].first, ExpectedReduction(dtype, op, world_, n, 0, n), what);
        }
      }
    }
  }

  void ReduceScatter() {
    for (DType dtype : kReducible) {
      std::vector<ReduceOp> ops = {ReduceOp::kSum, ReduceOp::kMax};
      if (IsFloating(dtype)) ops.push_back(ReduceOp::kAvg);
      for (ReduceOp op : ops) {
        for (int64_t n : options_.sizes) {
          const int64_t k = PaddedChunk(n, world_);
          Tensor input = Input(dtype, rank_, world_ * k, n);  // (world * k), zero-padded past n
          Tensor output = Tensor::Zeros({k}, dtype);          // (k)
          const std::string what = Label("ReduceScatter", dtype, n, ReduceOpName(op));
          if (!Await(comm_.ReduceScatter(input, output, op), what)) continue;
          Compare(output, ExpectedReduction(dtype, op, world_, n, rank_ * k, k), what);
        }
      }
    }
    // In place: the output is this rank's chunk of the input (the ZeRO-2 gradient layout).
    const int64_t n = 1000, k = PaddedChunk(n, world_);
    Tensor input = Input(DType::kF32, rank_, world_ * k, n);     // (world * k)
    Tensor output = input.Slice(0, rank_ * k, (rank_ + 1) * k);  // (k) view
    const std::string what = Label("ReduceScatter", DType::kF32, n, "in place");
    if (Await(comm_.ReduceScatter(input, output, ReduceOp::kSum), what)) {
      Compare(output.Clone(),
              ExpectedReduction(DType::kF32, ReduceOp::kSum, world_, n, rank_ * k, k), what);
    }
  }

  // Concatenation over ranks of each rank's (k) shard.
  Tensor Gathered(DType dtype, int64_t k) {
    std::vector<int64_t> all;
    for (int r = 0; r < world_; ++r) {
      for (int64_t i = 0; i < k; ++i) all.push_back(Value(dtype, r, i));
    }
    return FromExact(dtype, all);
  }

  void AllGather() {
    for (DType dtype : kAllDTypes) {
      for (int64_t n : options_.sizes) {
        const int64_t k = PaddedChunk(n, world_);
        Tensor input = Input(dtype, rank_, k, k);            // (k)
        Tensor output = Tensor::Zeros({world_ * k}, dtype);  // (world * k)
        const std::string what = Label("AllGather", dtype, n);
        if (!Await(comm_.AllGather(input, output), what)) continue;
        Compare(output, Gathered(dtype, k), what);
      }
      // In place: the input is this rank's chunk of the output (ZeRO-3 parameter gather).
      const int64_t k = 257;
      Tensor output = Tensor::Zeros({world_ * k}, dtype);        // (world * k)
      Tensor own = output.Slice(0, rank_ * k, (rank_ + 1) * k);  // (k) view
      own.CopyFrom(Input(dtype, rank_, k, k));
      const std::string what = Label("AllGather", dtype, k, "in place");
      if (Await(comm_.AllGather(own, output), what)) Compare(output, Gathered(dtype, k), what);
    }
  }

  void Broadcast() {
    for (DType dtype : kAllDTypes) {
      for (size_t s = 0; s < options_.sizes.size(); ++s) {
        const int64_t n = options_.sizes[s];
        const int root = static_cast<int>(s) % world_;
        Tensor t = Input(dtype, rank_, n, n);  // (n)
        const std::string what = Label("Broadcast", dtype, n, absl::StrCat("root ", root));
        if (!Await(comm_.Broadcast(t, root), what)) continue;
        Compare(t, Input(dtype, root, n, n), what);
      }
    }
  }

  void AllToAll() {
    for (DType dtype : kAllDTypes) {
      for (int64_t n : options_.sizes) {
        const int64_t k = PaddedChunk(n, world_);
        Tensor input = Input(dtype, rank_, world_ * k, world_ * k);  // (world * k)
        Tensor output = Tensor::Zeros({world_ * k}, dtype);          // (world * k)
        const std::string what = Label("AllToAll", dtype, n);
        if (!Await(comm_.AllToAll(input, output), what)) continue;
        std::vector<int64_t> expected;
        for (int j = 0; j < world_; ++j) {
          for (int64_t e = 0; e < k; ++e) expected.push_back(Value(dtype, j, rank_ * k + e));
        }
        Compare(output, FromExact(dtype, expected), what);
      }
    }
  }

  void SendRecv() {
    if (world_ == 1) return;
    const int right = (rank_ + 1) % world_, left = (rank_ + world_ - 1) % world_;
    int tag = 0;
    for (DType dtype : kAllDTypes) {
      for (int64_t n : options_.sizes) {
        ++tag;
        // Every rank receives and sends before waiting: posting must not block.
        Tensor received = Tensor::Zeros({n}, dtype);  // (n)
        auto recv = comm_.Recv(received, left, tag);
        auto send = comm_.Send(Input(dtype, rank_, n, n), right, tag);
        const std::string what = Label("Send/Recv", dtype, n, absl::StrCat("tag ", tag));
        const bool sent = Await(send, what + " (send)");
        if (Await(recv, what + " (recv)") && sent) {
          Compare(received, Input(dtype, left, n, n), what);
        }
      }
    }
    // Tags, not posting order, match messages: receive tag B before tag A.
    Tensor a = Tensor::Zeros({7}, DType::kF32), b = Tensor::Zeros({7}, DType::kF32);  // (7)
    auto send_a = comm_.Send(Input(DType::kF32, rank_, 7, 7), right, 1001);
    auto send_b = comm_.Send(Input(DType::kF32, rank_ + world_, 7, 7), right, 1002);
    auto recv_b = comm_.Recv(b, left, 1002);
    auto recv_a = comm_.Recv(a, left, 1001);
    const std::string what = Label("Send/Recv", DType::kF32, 7, "tag order");
    if (Await(send_a, what) && Await(send_b, what) && Await(recv_b, what) && Await(recv_a, what)) {
      Compare(a, Input(DType::kF32, left, 7, 7), what + " (tag 1001)");
      Compare(b, Input(DType::kF32, left + world_, 7, 7), what + " (tag 1002)");
    }
  }

  void Barrier() {
    for (int round = 1; round <= 3; ++round) {
      const std::string what = absl::StrCat("rank ", rank_, "/", world_, " Barrier ", round);
      if (options_.store != nullptr) {
        absl::StatusOr<int64_t> added = options_.store->Add("conformance/barrier", 1);
        if (!added.ok()) Fail(absl::StrCat(what, ": ", added.status().ToString()));
      }
      if (!Await(comm_.Barrier(), what)) continue;
      ++report_.checks;
      if (options_.store != nullptr) {
        // Nobody leaves round r before all world ranks counted in r times.
        absl::StatusOr<int64_t> count = options_.store->Add("conformance/barrier", 0);
        if (!count.ok() || *count < round * world_) {
          Fail(absl::StrCat(what, ": left the barrier with ",
                            count.ok() ? absl::StrCat(*count) : count.status().ToString(),
                            " arrivals counted, expected at least ", round * world_));
        }
      }
    }
  }

  // Work runs in issue order: a broadcast issued right after an all-reduce (no wait between)
  // sends the reduced values.
  void IssueOrder() {
    const int64_t n = 1001;
    Tensor t = Input(DType::kI32, rank_, n, n);  // (n)
    auto reduce = comm_.AllReduce(t, ReduceOp::kSum);
    auto broadcast = comm_.Broadcast(t, world_ - 1);
    const std::string what = Label("AllReduce then Broadcast", DType::kI32, n);
    if (Await(reduce, what) && Await(broadcast, what)) {
      Compare(t, ExpectedReduction(DType::kI32, ReduceOp::kSum, world_, n, 0, n), what);
    }
  }

  void Determinism() {
    int64_t n = 1;
    for (int64_t s : options_.sizes) n = std::max(n, std::min<int64_t>(s, 100003));
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const Tensor data = Tensor::FromFloats(RandomFloats(rank_, 0, n), {n}, dtype);  // (n)
      Tensor first = data.Clone(), second = data.Clone();                             // (n)
      const std::string what = Label("determinism", dtype, n);
      auto w1 = comm_.AllReduce(first, ReduceOp::kSum);
      auto w2 = comm_.AllReduce(second, ReduceOp::kSum);
      if (!Await(w1, what) || !Await(w2, what)) continue;
      Compare(second, first, what + ": second run vs first");
      // Every rank holds the same bits.
      Tensor all = Tensor::Zeros({world_ * n}, dtype);  // (world * n)
      if (!Await(comm_.AllGather(first, all), what)) continue;
      for (int r = 0; r < world_; ++r) {
        Compare(all.Slice(0, r * n, (r + 1) * n).Clone(), first,
                absl::StrCat(what, ": rank ", r, "'s result vs this rank's"));
      }
      // Close to the exact sum (of the values as stored in `dtype`).
      std::vector<double> exact(static_cast<size_t>(n), 0.0);
      for (int r = 0; r < world_; ++r) {
        const std::vector<float> v =
            Tensor::FromFloats(RandomFloats(r, 0, n), {n}, dtype).ToFloats();
        for (int64_t i = 0; i < n; ++i) exact[i] += v[i];
      }
      const std::vector<float> got = first.ToFloats();
      const double tolerance = dtype == DType::kF32 ? 1e-5 : 0.05;  // |partial sums| <= 4
      double worst = 0;
      for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(got[i] - exact[i]));
      ++report_.checks;
      if (!(worst <= tolerance)) {
        Fail(absl::StrCat(what, ": max abs error ", worst, " vs exact sum (tolerance ", tolerance,
                          ")"));
      }
    }
  }

  // Bad arguments fail the one operation with InvalidArgument and poison nothing. Every rank
  // issues the same bad calls, so collective numbering stays aligned.
  void InvalidArguments() {
    auto expect_invalid = [&](const std::shared_ptr<Work>& work, const std::string& what) {
      ++report_.checks;
      const absl::Status status = work->Wait(options_.wait);
      if (!absl::IsInvalidArgument(status)) {
        Fail(absl::StrCat(what, ": expected InvalidArgument, got ", status.ToString()));
      }
    };
    expect_invalid(comm_.AllReduce(Tensor::Zeros({4}, DType::kU8), ReduceOp::kSum), "u8 sum");
    expect_invalid(comm_.AllReduce(Tensor::Zeros({4}, DType::kI32), ReduceOp::kAvg), "i32 avg");
    expect_invalid(comm_.ReduceScatter(Tensor::Zeros({world_ * 3 + 1}, DType::kF32),
                                       Tensor::Zeros({3}, DType::kF32), ReduceOp::kSum),
                   "reduce-scatter sizes");
    expect_invalid(
        comm_.AllGather(Tensor::Zeros({3}, DType::kF32), Tensor::Zeros({world_ * 3}, DType::kF16)),
        "all-gather dtypes");
    expect_invalid(comm_.Broadcast(Tensor::Zeros({3}, DType::kF32), world_), "broadcast root");
    expect_invalid(comm_.Send(Tensor::Zeros({3}, DType::kF32), rank_, 0), "send to self");
    expect_invalid(
        comm_.AllReduce(Tensor::Zeros({4, 4}, DType::kF32).Transpose(0, 1), ReduceOp::kSum),
        "non-contiguous");
    Tensor t = Input(DType::kF32, rank_, 7, 7);  // (7)
    const std::string what = Label("AllReduce after invalid calls", DType::kF32, 7);
    if (Await(comm_.AllReduce(t, ReduceOp::kSum), what)) {
      Compare(t, ExpectedReduction(DType::kF32, ReduceOp::kSum, world_, 7, 0, 7), what);
    }
  }

  Communicator& comm_;
  const ConformanceOptions& options_;
  const int rank_;
  const int world_;
  ConformanceReport report_;
};

void HashBytes(uint64_t* hash, const Tensor& t) {
  const auto* p = static_cast<const unsigned char*>(t.raw_data());
  for (size_t i = 0; i < t.nbytes(); ++i) *hash = (*hash ^ p[i]) * 1099511628211ull;  // FNV-1a
}

}  // namespace

ConformanceReport RunConformance(Communicator& comm, const ConformanceOptions& options) {
  return Suite(comm, options).Run();
}

uint64_t ReductionDigest(Communicator& comm, int64_t n, std::string* error) {
  const int world = comm.world_size();
  uint64_t hash = 1469598103934665603ull;
  auto run = [&](const std::shared_ptr<Work>& work, const Tensor& result) {
    const absl::Status status = work->Wait(absl::Seconds(300));
    if (!status.ok()) absl::StrAppend(error, status.ToString(), "\n");
    HashBytes(&hash, result);
  };
  const std::vector<float> data = RandomFloats(comm.rank(), 1, n);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg}) {
      Tensor t = Tensor::FromFloats(data, {n}, dtype);  // (n)
      run(comm.AllReduce(t, op), t);
    }
    const int64_t k = PaddedChunk(n, world);
    Tensor input = Tensor::FromFloats(RandomFloats(comm.rank(), 2, world * k), {world * k},
                                      dtype);   // (world * k)
    Tensor output = Tensor::Zeros({k}, dtype);  // (k)
    run(comm.ReduceScatter(input, output, ReduceOp::kSum), output);
  }
  return hash;
}

}  // namespace kiln::dist::testing
