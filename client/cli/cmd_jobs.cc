// kiln submit, list, status, cancel.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli/format.h"
#include "proto/spec_loader.h"
#include "proto/spec_validate.h"

namespace kiln::cli {
namespace {

std::string NewSubmissionId() {
  std::random_device rd;
  std::mt19937_64 gen((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ getpid());
  return absl::StrFormat("cli-%016x%016x", gen(), gen());
}

absl::Status Usage(const std::string& text) { return absl::InvalidArgumentError(text); }

}  // namespace

int RunSubmit(CliContext& ctx, const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {{"file", "f", true},
                                 {"follow", "", false},
                                 {"name", "", true},
                                 {"priority", "", true},
                                 {"submission-id", "", true}});
  if (!args.ok()) return Fail(args.status());
  if (!args->Has("file") || !args->positional().empty()) {
    return Fail(
        Usage("usage: kiln submit -f job.yaml [--follow] [--name N] [--priority P] "
              "[--submission-id ID]"));
  }
  // Validate locally first: the error names the file, line and field path.
  absl::StatusOr<v1::JobSpec> spec = spec::LoadSpecFile(args->Get("file"));
  if (!spec.ok()) return Fail(spec.status());
  v1::SubmitJobRequest request;
  *request.mutable_spec() = *spec;
  if (args->Has("name")) request.set_name(args->Get("name"));
  if (args->Has("priority")) {
    absl::StatusOr<int64_t> p = args->GetInt("priority", 0);
    if (!p.ok()) return Fail(p.status());
    request.set_priority(static_cast<int32_t>(*p));
  }
  request.set_base_dir(
      std::filesystem::absolute(args->Get("file")).parent_path().lexically_normal().string());
  request.set_submission_id(args->Get("submission-id", NewSubmissionId()));
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  absl::StatusOr<v1::SubmitJobResponse> response = (*client)->Submit(request);
  if (!response.ok()) return Fail(response.status());
  const v1::Job& job = response->job();
  if (ctx.json && !args->Has("follow")) {
    std::cout << ToJson(job) << "\n";
    return kExitOk;
  }
  if (!ctx.json) {
    std::cout << job.id() << (response->created() ? " submitted" : " was already submitted") << " ("
              << job.name() << ", " << job.workers()
              << (job.workers() == 1 ? " worker" : " workers") << "): " << StateName(job.state())
              << "\n";
  }
  if (!args->Has("follow")) return kExitOk;
  return FollowJob(ctx, job.id());
}

int RunList(CliContext& ctx, const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {{"state", "", true}, {"limit", "n", true}});
  if (!args.ok()) return Fail(args.status());
  std::vector<v1::JobState> states;
  for (const std::string& value : args->GetAll("state")) {
    for (absl::string_view name : absl::StrSplit(value, ',', absl::SkipEmpty())) {
      v1::JobState state;
      const std::string upper = absl::AsciiStrToUpper(name);
      if (!v1::JobState_Parse(upper, &state) || state == v1::JOB_STATE_UNSPECIFIED) {
        return Fail(Usage(absl::StrCat("--state: \"", std::string(name),
                                       "\" is not one of QUEUED, STARTING, RUNNING, RESTARTING, "
                                       "SUCCEEDED, FAILED, CANCELLED")));
      }
      states.push_back(state);
    }
  }
  absl::StatusOr<int64_t> limit = args->GetInt("limit", 0);
  if (!limit.ok()) return Fail(limit.status());
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  absl::StatusOr<std::vector<v1::Job>> jobs = (*client)->ListJobs(states, static_cast<int>(*limit));
  if (!jobs.ok()) return Fail(jobs.status());
  if (ctx.json) {
    v1::ListJobsResponse all;
    for (v1::Job& job : *jobs) *all.add_jobs() = std::move(job);
    std::cout << ToJson(all) << "\n";
    return kExitOk;
  }
  Table table({"ID", "NAME", "STATE", "PRI", "WORKERS", "ATTEMPT", "STEP", "AGE", "REASON"});
  for (const v1::Job& job : *jobs) {
    const v1::JobProgress& p = job.progress();
    table.Add({job.id(), Truncate(job.name(), 24), StateName(job.state()),
               absl::StrCat(job.priority()), absl::StrCat(job.workers()),
               absl::StrCat(job.attempt()),
               p.step() > 0 ? absl::StrCat(p.step(), "/", p.total_steps()) : "-",
               FormatAge(job.created_at()), Truncate(job.reason(), 70)});
  }
  std::cout << table.Render();
  return kExitOk;
}

int RunStatus(CliContext& ctx, const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {{"events", "", true}, {"follow", "", false}});
  if (!args.ok()) return Fail(args.status());
  if (args->positional().size() != 1) return Fail(Usage("usage: kiln status JOB [--events N]"));
  const std::string& id = args->positional()[0];
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  if (args->Has("follow")) return FollowJob(ctx, id);
  absl::StatusOr<v1::Job> job = (*client)->GetJob(id, /*include_events=*/true);
  if (!job.ok()) return Fail(job.status());
  if (ctx.json) {
    std::cout << ToJson(*job) << "\n";
    return kExitOk;
  }
  absl::StatusOr<int64_t> shown = args->GetInt("events", 10);
  if (!shown.ok()) return Fail(shown.status());
  const v1::Job& j = *job;
  std::cout << j.id() << "  " << j.name() << "\n";
  auto line = [](const std::string& key, const std::string& value) {
    std::cout << "  " << absl::StrFormat("%-11s", key) << value << "\n";
  };
  line("state", absl::StrCat(StateName(j.state()), " (attempt ", j.attempt(), ", ", j.restarts(),
                             j.restarts() == 1 ? " restart)" : " restarts)"));
  line("reason", j.reason());
  if (j.state() == v1::QUEUED && j.queue_position() > 0) {
    line("queue", absl::StrCat("position ", j.queue_position()));
  }
  const std::string progress = FormatProgress(j.progress());
  line("progress", progress.empty() ? "-" : progress);
  line("workers", absl::StrCat(j.workers(), " (", j.spec().resources().device(), "), priority ",
                               j.priority()));
  line("created", FormatTime(j.created_at()) + " (" + FormatAge(j.created_at()) + ")");
  line("started", FormatTime(j.started_at()));
  line("finished", FormatTime(j.finished_at()));
  line("checkpoint", j.has_last_checkpoint() ? absl::StrCat("step ", j.last_checkpoint().step(),
                                                            ": ", j.last_checkpoint().path())
                                             : "none yet (" + j.checkpoint_dir() + ")");
  line("logs", j.log_dir());
  if (j.ranks_size() > 0) {
    std::cout << "\n";
    Table ranks({"RANK", "STATE", "PID", "STEP", "PHASE", "HEARTBEAT", "EXIT"});
    for (const v1::RankStatus& r : j.ranks()) {
      std::string exit = "-";
      if (r.signal() != 0)
        exit = absl::StrCat("signal ", r.signal());
      else if (r.state() == v1::RANK_EXITED || r.state() == v1::RANK_FAILED)
        exit = absl::StrCat(r.exit_code());
      ranks.Add({absl::StrCat(r.rank()), std::string(v1::RankState_Name(r.state()).substr(5)),
                 absl::StrCat(r.pid()), absl::StrCat(r.step()), r.phase().empty() ? "-" : r.phase(),
                 FormatAge(r.last_heartbeat()), exit});
    }
    std::cout << ranks.Render();
  }
  if (*shown > 0 && j.events_size() > 0) {
    std::cout << "\nevents\n";
    const int first = std::max(0, j.events_size() - static_cast<int>(*shown));
    for (int i = first; i < j.events_size(); ++i) {
      const v1::JobEvent& e = j.events(i);
      std::cout << "  " << FormatTime(e.time()) << "  " << e.message() << "\n";
    }
  }
  return kExitOk;
}

int RunCancel(CliContext& ctx, const std::vector<std::string>& argv) {
  auto args =
      Args::Parse(argv, {{"grace", "", true}, {"reason", "", true}, {"no-wait", "", false}});
  if (!args.ok()) return Fail(args.status());
  if (args->positional().size() != 1) {
    return Fail(Usage("usage: kiln cancel JOB [--grace S] [--reason TEXT] [--no-wait]"));
  }
  absl::StatusOr<double> grace = args->GetDouble("grace", 0);
  if (!grace.ok()) return Fail(grace.status());
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  const std::string& id = args->positional()[0];
  absl::StatusOr<v1::Job> job = (*client)->Cancel(id, *grace, args->Get("reason"));
  if (!job.ok()) return Fail(job.status());
  // Wait for the gang to be gone (it has the grace period, then SIGKILL).
  while (!args->Has("no-wait") && !client::IsTerminal(job->state())) {
    absl::SleepFor(absl::Milliseconds(200));
    job = (*client)->GetJob(id);
    if (!job.ok()) return Fail(job.status());
  }
  if (ctx.json) {
    std::cout << ToJson(*job) << "\n";
  } else {
    std::cout << job->id() << " " << StateName(job->state()) << ": " << job->reason() << "\n";
  }
  return kExitOk;
}

}  // namespace kiln::cli
