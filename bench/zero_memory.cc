// Per-rank memory of model states under ZeRO at dp=4 (ranks as threads, in-process communicator):
// GPT-2 L4 H4 D256 V4096, bf16 weights and gradients with f32 master weights and Adam moments.
// Prints, for each stage, the measured bytes of parameters, gradients and optimizer state against
// the ZeRO paper's formulas (16P, 4P + 12P/N, 2P + 14P/N, 16P/N), plus communication buffers and
// the planned activation arena (where ZeRO-3's gathered layers live). Memory, not time: the
// figures are exact on any machine.
#include <cstdio>
#include <thread>

#include "engine/core/parallel.h"
#include "engine/data/token_file.h"
#include "engine/dist/communicator.h"
#include "engine/train/session.h"

int main() {
  using namespace kiln;
  SetNumThreads(1);
  std::vector<uint32_t> tokens(100000);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = (i * 2654435761u >> 7) % 4096;
  const std::string data = "/tmp/kiln-zero-memory.bin";
  KILN_CHECK_OK(data::WriteTokenFile(data, tokens));
  const int world = 4;
  std::printf("| stage | parameters | gradients | optimizer | states total | ZeRO formula | ratio | "
              "comm buffers | activation arena |\n|---|---|---|---|---|---|---|---|---|\n");
  for (int stage = 0; stage <= 3; ++stage) {
    dist::InProcessStore store;
    std::vector<train::TrainingSession::MemoryReport> reports(world);
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r) {
      threads.emplace_back([&, r] {
        kiln::v1::JobSpec s;
        s.set_name("zero-memory");
        auto* m = s.mutable_model();
        m->set_family("gpt2");
        m->set_n_layer(4);
        m->set_n_head(4);
        m->set_d_model(256);
        m->set_vocab_size(4096);
        m->set_max_seq_len(256);
        s.mutable_data()->set_train(data);
        s.mutable_data()->set_seq_len(256);
        s.mutable_train()->set_steps(1);
        s.mutable_train()->set_micro_batch(2);
        s.mutable_train()->set_precision("bf16");
        s.mutable_parallel()->set_dp(world);
        s.mutable_parallel()->set_zero_stage(stage);
        s.mutable_parallel()->set_bucket_mb(4);
        auto comm = dist::MakeCommunicator("inprocess", &store, r, world, {});
        KILN_CHECK_OK(comm.status());
        train::TrainOptions o;
        o.rank = r;
        o.world_size = world;
        o.communicator = comm->get();
        auto session = train::TrainingSession::Create(s, o);
        KILN_CHECK_OK(session.status());
        KILN_CHECK_OK((*session)->InitializeWeights());
        KILN_CHECK_OK((*session)->Step().status());
        reports[r] = (*session)->Memory();
      });
    }
    for (auto& t : threads) t.join();
    const auto& m = reports[0];
    const double P = static_cast<double>(m.num_params);
    const double formula[] = {16 * P, 4 * P + 12 * P / world, 2 * P + 14 * P / world,
                              16 * P / world};
    const double states = m.parameters + m.gradients + m.optimizer;
    std::printf("| %d | %.2f MB | %.2f MB | %.2f MB | %.2f MB | %.2f MB | %.3f | %.2f MB | %.1f MB |\n",
                stage, m.parameters / 1e6, m.gradients / 1e6, m.optimizer / 1e6, states / 1e6,
                formula[stage] / 1e6, states / formula[stage], m.buffers / 1e6,
                m.activations / 1e6);
  }
  std::printf("\nP = parameters counted without padding; N = %d.\n", world);
  return 0;
}
