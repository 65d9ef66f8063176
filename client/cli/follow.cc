// kiln submit --follow / kiln status --follow: prints the job's events as they happen under a live
// progress line (step/total, loss, tokens/s, ETA), reconnects across a kilnd restart, and exits
// with the job's outcome.
#include <unistd.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cli/commands.h"
#include "client/cli/format.h"

namespace kiln::cli {
namespace {

constexpr absl::Duration kReconnectFor = absl::Seconds(60);
constexpr absl::Duration kPlainEvery = absl::Seconds(5);

class ProgressView {
 public:
  explicit ProgressView(bool tty) : tty_(tty) {}

  void Job(const v1::Job& job) {
    job_ = job;
    if (job.progress().step() > 0) progress_ = job.progress();
  }
  void Point(const v1::MetricPoint& p) {
    const absl::Time t = FromProto(p.time());
    if (first_time_ == absl::InfinitePast() || p.step() < first_step_) {
      first_time_ = t;
      first_step_ = p.step();
    }
    last_time_ = t;
    progress_.set_step(p.step());
    progress_.set_loss(p.loss());
    progress_.set_tokens_per_s(p.tokens_per_s());
    progress_.set_step_ms(p.step_ms());
    if (p.has_val_loss()) progress_.set_val_loss(p.val_loss());
    if (progress_.total_steps() == 0) progress_.set_total_steps(job_.spec().train().steps());
  }
  // A line above the progress line.
  void Print(const std::string& line) {
    Clear();
    std::cout << line << "\n";
    Draw(/*force=*/true);
  }
  void Draw(bool force) {
    const std::string text = Text();
    if (tty_) {
      std::cout << "\r\033[K" << text << std::flush;
      drawn_ = true;
    } else if (force || absl::Now() - last_plain_ > kPlainEvery) {
      if (text != last_text_) std::cout << text << "\n" << std::flush;
      last_text_ = text;
      last_plain_ = absl::Now();
    }
  }
  void Clear() {
    if (tty_ && drawn_) std::cout << "\r\033[K";
    drawn_ = false;
  }

 private:
  std::string Text() const {
    std::string out = absl::StrCat(job_.id(), " ", StateName(job_.state()));
    if (progress_.total_steps() == 0) {
      v1::JobProgress p = progress_;
      p.set_total_steps(job_.spec().train().steps());
      const std::string text = FormatProgress(p);
      if (!text.empty()) absl::StrAppend(&out, "  ", text);
    } else {
      const std::string text = FormatProgress(progress_);
      if (!text.empty()) absl::StrAppend(&out, "  ", text);
    }
    double per_step_s = 0;
    if (last_time_ > first_time_ + absl::Seconds(1) && progress_.step() > first_step_) {
      per_step_s = absl::ToDoubleSeconds(last_time_ - first_time_) /
                   static_cast<double>(progress_.step() - first_step_);
    } else if (progress_.step_ms() > 0) {
      per_step_s = progress_.step_ms() / 1000;
    }
    const int64_t total =
        progress_.total_steps() > 0 ? progress_.total_steps() : job_.spec().train().steps();
    if (per_step_s > 0 && progress_.step() > 0 && job_.state() == v1::RUNNING) {
      absl::StrAppend(&out, "  ETA ",
                      ShortDuration(absl::Seconds(per_step_s * (total - progress_.step()))));
    }
    if (job_.state() == v1::QUEUED || job_.state() == v1::RESTARTING) {
      absl::StrAppend(&out, "  (", Truncate(job_.reason(), 80), ")");
    }
    return out;
  }

  const bool tty_;
  v1::Job job_;
  v1::JobProgress progress_;
  absl::Time first_time_ = absl::InfinitePast();
  absl::Time last_time_ = absl::InfinitePast();
  int64_t first_step_ = 0;
  bool drawn_ = false;
  absl::Time last_plain_ = absl::InfinitePast();
  std::string last_text_;
};

}  // namespace

int FollowJob(CliContext& ctx, const std::string& job_id) {
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  ProgressView view(isatty(STDOUT_FILENO) && !ctx.json);
  v1::Job last;
  absl::Time lost_since = absl::InfiniteFuture();
  int64_t last_event = 0;  // to resume after a reconnect without missing events
  while (true) {
    absl::Status s = (*client)->Watch(
        job_id, /*history=*/false,
        [&](const v1::JobUpdate& u) {
          if (u.has_event()) last_event = u.event().seq();
          if (lost_since != absl::InfiniteFuture()) {
            lost_since = absl::InfiniteFuture();
            if (!ctx.json) view.Print("reconnected to kilnd");
          }
          if (ctx.json) {
            std::cout << ToJson(u, /*pretty=*/false) << "\n" << std::flush;
          }
          if (u.has_job()) {
            last = u.job();
            view.Job(last);
          }
          if (u.has_metrics()) view.Point(u.metrics());
          if (ctx.json) return true;
          if (u.has_event()) {
            view.Print(absl::StrCat(FormatTime(u.event().time()), "  ", u.event().message()));
          } else {
            view.Draw(/*force=*/u.has_job());
          }
          return true;
        },
        last_event);
    if (client::IsTerminal(last.state())) break;
    const bool retry = s.ok() || absl::IsUnavailable(s) || absl::IsCancelled(s);
    if (!retry) {
      view.Clear();
      return Fail(s);
    }
    if (lost_since == absl::InfiniteFuture()) {
      lost_since = absl::Now();
      if (!ctx.json) view.Print("lost kilnd; reconnecting...");
    } else if (absl::Now() - lost_since > kReconnectFor) {
      view.Clear();
      return Fail(s.ok() ? absl::UnavailableError("kilnd went away") : s);
    }
    if (!(*client)->WaitForServer(absl::Seconds(1))) absl::SleepFor(absl::Milliseconds(200));
  }
  view.Clear();
  if (!ctx.json) {
    std::string took;
    if (last.started_at().seconds() > 0 && last.finished_at().seconds() > 0) {
      took =
          " after " + ShortDuration(FromProto(last.finished_at()) - FromProto(last.started_at()));
    }
    std::cout << last.id() << " " << StateName(last.state()) << took << ": " << last.reason()
              << "\n";
    const std::string progress = FormatProgress(last.progress());
    if (!progress.empty()) std::cout << "  " << progress << "\n";
    std::cout << "  logs:       " << last.log_dir() << "\n";
    if (last.has_last_checkpoint()) {
      std::cout << "  checkpoint: " << last.last_checkpoint().path() << " (step "
                << last.last_checkpoint().step() << ")\n";
    }
  }
  return ExitCodeFor(last.state());
}

}  // namespace kiln::cli
