// Specs of real training jobs (Note [Real jobs in tests]), token data made with kiln-data, and the
// submit / wait / inspect helpers the integration tests share.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "tests/integration/harness.h"

namespace kiln::testing {
namespace {

// "parallel" and "resources" for `workers` data-parallel ranks.
std::string Placement(int workers, int zero_stage) {
  std::string out = absl::StrCat("resources: {workers: ", workers, "}\n");
  if (workers > 1 || zero_stage > 0) {
    absl::StrAppend(&out, "parallel: {dp: ", workers, ", zero_stage: ", zero_stage, "}\n");
  }
  return out;
}

// About 200 KB of sentences drawn from a small vocabulary with a fixed linear congruential
// generator: the same bytes on every machine, and structure enough for a loss that falls.
std::string GeneratedText() {
  static const char* const kWords[] = {
      "the",  "a",     "kiln",   "fires", "clay", "slowly", "and",   "then",  "cools",
      "pots", "glaze", "turns",  "glass", "heat", "rises",  "in",    "every", "chamber",
      "of",   "brick", "potter", "waits", "for",  "dawn",   "smoke", "ash",   "falls",
      "on",   "shelf", "bowls",  "crack", "when", "too",    "fast",  "cups",  "ring",
      "like", "bells", "wood",   "burns", "hot",  "white",  "blue",  "red",   "iron"};
  constexpr int kNumWords = sizeof(kWords) / sizeof(kWords[0]);
  uint64_t state = 88172645463325252ull;
  auto next = [&state](int n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((state >> 33) % static_cast<uint64_t>(n));
  };
  std::string text;
  while (text.size() < 200000) {
    const int words = 4 + next(8);
    for (int w = 0; w < words; ++w) {
      std::string word = kWords[next(kNumWords)];
      if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      absl::StrAppend(&text, w == 0 ? "" : " ", word);
    }
    text += next(5) == 0 ? ".\n" : ". ";
  }
  return text;
}

}  // namespace

std::string MlpJob(int steps, int workers, const std::string& extra_yaml) {
  return absl::StrCat(
      "name: mlp\n"
      "model: {family: mlp, n_layer: 3, d_in: 16, d_ff: 64, vocab_size: 4}\n"
      "train: {steps: ",
      steps, ", micro_batch: 32, seed: 7, optimizer: {name: adamw, lr: 3.0e-3}}\n",
      Placement(workers, 0), extra_yaml);
}

std::string GptJob(const std::string& train_bin, int steps, int workers, int zero_stage,
                   const std::string& extra_yaml) {
  return absl::StrCat(
      "name: gpt\n"
      "model: {family: gpt2, n_layer: 2, n_head: 4, d_model: 64, vocab_size: 256, "
      "max_seq_len: 64}\n"
      "data: {train: ",
      train_bin,
      ", seq_len: 64, shuffle: true}\n"
      "train: {steps: ",
      steps,
      ", micro_batch: 8, seed: 3, precision: fp32, grad_clip: 1.0, "
      "optimizer: {name: adamw, lr: 1.0e-3, weight_decay: 0.1}}\n",
      Placement(workers, zero_stage), extra_yaml);
}

std::string LongStepJob(int workers, const std::string& extra_yaml) {
  return absl::StrCat(
      "name: long-steps\n"
      "model: {family: mlp, n_layer: 4, d_in: 64, d_ff: 512, vocab_size: 4}\n"
      "train: {steps: 1000, micro_batch: 256, grad_accum: 500, seed: 7}\n",
      Placement(workers, 0), extra_yaml);
}

std::string BadInputJob(const std::string& train_bin) {
  return absl::StrCat(
      "name: bad-input\n"
      "model: {family: gpt2, n_layer: 1, n_head: 2, d_model: 32, vocab_size: 64, "
      "max_seq_len: 32}\n"
      "data: {train: ",
      train_bin,
      ", seq_len: 32}\n"
      "train: {steps: 10, micro_batch: 2}\n"
      "fault: {max_restarts: 3}\n");
}

absl::StatusOr<std::string> PrepareTokens(const std::string& dir) {
  const std::string text = WriteFile(dir, "corpus.txt", GeneratedText());
  const std::string out = dir + "/tokens";
  const pid_t pid = fork();
  if (pid == 0) {
    execl(DataBinary().c_str(), DataBinary().c_str(), "prepare", "--tokenizer", "byte",
          text.c_str(), "--out", out.c_str(), nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("kiln-data prepare failed with status ", status));
  }
  return out + "/train.bin";
}

absl::StatusOr<v1::Job> Submit(client::KilnClient* client, const std::string& yaml,
                               const std::string& submission_id) {
  v1::SubmitJobRequest request;
  request.set_spec_yaml(yaml);
  request.set_submission_id(submission_id);
  request.set_base_dir("/");
  absl::StatusOr<v1::SubmitJobResponse> r = client->Submit(request);
  if (!r.ok()) return r.status();
  return r->job();
}

absl::StatusOr<v1::Job> WaitFor(client::KilnClient* client, const std::string& job_id,
                                const std::function<bool(const v1::Job&)>& done,
                                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<v1::Job> job;
  while (true) {
    job = client->GetJob(job_id, /*include_events=*/true);
    if (job.ok() && done(*job)) return job;
    if (absl::Now() > deadline) {
      if (!job.ok()) return job.status();
      return absl::DeadlineExceededError(absl::StrCat("timed out; job is ",
                                                      v1::JobState_Name(job->state()), " at step ",
                                                      job->progress().step(), ": ", job->reason()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
}

absl::StatusOr<v1::Job> WaitForState(client::KilnClient* client, const std::string& job_id,
                                     v1::JobState state, absl::Duration timeout) {
  return WaitFor(
      client, job_id, [state](const v1::Job& j) { return j.state() == state; }, timeout);
}

absl::StatusOr<v1::Job> WaitForEnd(client::KilnClient* client, const std::string& job_id,
                                   absl::Duration timeout) {
  return WaitFor(
      client, job_id, [](const v1::Job& j) { return client::IsTerminal(j.state()); }, timeout);
}

absl::StatusOr<v1::Job> WaitForTraining(client::KilnClient* client, const std::string& job_id,
                                        absl::Duration timeout) {
  return WaitFor(
      client, job_id,
      [](const v1::Job& j) {
        if (j.state() != v1::RUNNING || j.ranks_size() == 0) return false;
        for (const v1::RankStatus& r : j.ranks()) {
          if (r.phase() != "train") return false;
        }
        return true;
      },
      timeout);
}

std::vector<pid_t> Pids(const v1::Job& job) {
  std::vector<pid_t> pids;
  for (const v1::RankStatus& r : job.ranks()) pids.push_back(r.pid());
  return pids;
}

const v1::JobEvent* FindEvent(const v1::Job& job, const std::string& text) {
  for (const v1::JobEvent& e : job.events()) {
    if (Contains(e.message(), text)) return &e;
  }
  return nullptr;
}

bool HasEvent(const v1::Job& job, const std::string& text) {
  return FindEvent(job, text) != nullptr;
}

absl::Time EventTime(const v1::JobEvent& event) {
  return absl::FromUnixSeconds(event.time().seconds()) + absl::Nanoseconds(event.time().nanos());
}

int64_t NumberAfter(const std::string& text, const std::string& prefix) {
  const size_t at = text.find(prefix);
  if (at == std::string::npos) return -1;
  const size_t begin = at + prefix.size();
  const size_t end = text.find_first_not_of("0123456789", begin);
  int64_t n = -1;
  return absl::SimpleAtoi(text.substr(begin, end - begin), &n) ? n : -1;
}

std::string Logs(client::KilnClient* client, const std::string& job_id) {
  v1::StreamLogsRequest request;
  request.set_job_id(job_id);
  std::string out;
  (void)client->StreamLogs(request, [&](const v1::LogChunk& c) {
    out += c.data();
    return true;
  });
  return out;
}

std::vector<v1::MetricPoint> AllMetrics(client::KilnClient* client, const std::string& job_id) {
  absl::StatusOr<v1::GetJobMetricsResponse> r = client->Metrics(job_id, 0, 100000);
  if (!r.ok()) return {};
  return {r->points().begin(), r->points().end()};
}

}  // namespace kiln::testing
