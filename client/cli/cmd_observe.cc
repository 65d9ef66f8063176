// kiln logs, metrics, nodes.
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/args.h"
#include "client/cli/commands.h"
#include "client/cli/format.h"

namespace kiln::cli {
namespace {

// Prefixes each complete line of a merged chunk with its rank.
void PrintTagged(int rank, const std::string& data, std::string* carry) {
  std::string text = *carry + data;
  size_t start = 0;
  while (true) {
    const size_t nl = text.find('\n', start);
    if (nl == std::string::npos) break;
    std::cout << "[" << rank << "] " << text.substr(start, nl - start + 1);
    start = nl + 1;
  }
  *carry = text.substr(start);
}

}  // namespace

int RunLogs(CliContext& ctx, const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {{"follow", "f", false}, {"rank", "", true}, {"offset", "", true}});
  if (!args.ok()) return Fail(args.status());
  if (args->positional().size() != 1) {
    return Fail(absl::InvalidArgumentError("usage: kiln logs JOB [-f] [--rank R] [--offset B]"));
  }
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  const std::string& id = args->positional()[0];
  absl::StatusOr<v1::Job> job = (*client)->GetJob(id);
  if (!job.ok()) return Fail(job.status());
  v1::StreamLogsRequest request;
  request.set_job_id(id);
  request.set_follow(args->Has("follow"));
  if (args->Has("rank")) {
    absl::StatusOr<int64_t> rank = args->GetInt("rank", 0);
    if (!rank.ok()) return Fail(rank.status());
    request.set_rank(static_cast<int32_t>(*rank));
    absl::StatusOr<int64_t> offset = args->GetInt("offset", 0);
    if (!offset.ok()) return Fail(offset.status());
    request.set_offset(*offset);
  }
  const bool tag = !args->Has("rank") && job->workers() > 1;
  std::vector<std::string> carry(job->workers());
  absl::Status s = (*client)->StreamLogs(request, [&](const v1::LogChunk& chunk) {
    if (ctx.json) {
      std::cout << ToJson(chunk, /*pretty=*/false) << "\n";
    } else if (tag && chunk.rank() < static_cast<int>(carry.size())) {
      PrintTagged(chunk.rank(), chunk.data(), &carry[chunk.rank()]);
    } else {
      std::cout << chunk.data();
    }
    std::cout.flush();
    return true;
  });
  for (size_t r = 0; r < carry.size(); ++r) {
    if (!carry[r].empty()) std::cout << "[" << r << "] " << carry[r] << "\n";
  }
  if (!s.ok()) return Fail(s);
  return kExitOk;
}

int RunMetrics(CliContext& ctx, const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {{"csv", "", false}, {"since", "", true}, {"limit", "", true}});
  if (!args.ok()) return Fail(args.status());
  if (args->positional().size() != 1) {
    return Fail(absl::InvalidArgumentError("usage: kiln metrics JOB [--csv] [--since STEP]"));
  }
  absl::StatusOr<int64_t> since = args->GetInt("since", 0);
  absl::StatusOr<int64_t> limit = args->GetInt("limit", 0);
  if (!since.ok()) return Fail(since.status());
  if (!limit.ok()) return Fail(limit.status());
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  absl::StatusOr<v1::GetJobMetricsResponse> r =
      (*client)->Metrics(args->positional()[0], *since, static_cast<int>(*limit));
  if (!r.ok()) return Fail(r.status());
  if (ctx.json) {
    std::cout << ToJson(*r) << "\n";
    return kExitOk;
  }
  auto val = [](const v1::MetricPoint& p) {
    return p.has_val_loss() ? absl::StrFormat("%.6g", p.val_loss()) : std::string();
  };
  if (args->Has("csv")) {
    std::cout << "step,attempt,loss,lr,grad_norm,tokens_per_s,step_ms,loss_scale,skipped,val_loss,"
                 "time\n";
    for (const v1::MetricPoint& p : r->points()) {
      std::cout << absl::StrFormat(
          "%d,%d,%.8g,%.8g,%.8g,%.8g,%.8g,%.8g,%d,%s,%s\n", p.step(), p.attempt(), p.loss(), p.lr(),
          p.grad_norm(), p.tokens_per_s(), p.step_ms(), p.loss_scale(), p.skipped() ? 1 : 0, val(p),
          absl::FormatTime(absl::RFC3339_full, FromProto(p.time()), absl::UTCTimeZone()));
    }
    return kExitOk;
  }
  Table table({"STEP", "ATTEMPT", "LOSS", "LR", "GRAD_NORM", "TOK/S", "STEP_MS", "VAL_LOSS"});
  for (const v1::MetricPoint& p : r->points()) {
    table.Add({absl::StrCat(p.step()), absl::StrCat(p.attempt()), absl::StrFormat("%.4f", p.loss()),
               absl::StrFormat("%.3g", p.lr()), absl::StrFormat("%.3f", p.grad_norm()),
               Thousands(p.tokens_per_s()), absl::StrFormat("%.1f", p.step_ms()), val(p)});
  }
  std::cout << table.Render();
  if (r->truncated()) std::cout << "(more points: use --since)\n";
  return kExitOk;
}

int RunNodes(CliContext& ctx, const std::vector<std::string>& argv) {
  auto args = Args::Parse(argv, {});
  if (!args.ok()) return Fail(args.status());
  absl::StatusOr<client::KilnClient*> client = ctx.Client();
  if (!client.ok()) return Fail(client.status());
  absl::StatusOr<v1::ListNodesResponse> r = (*client)->Nodes();
  if (!r.ok()) return Fail(r.status());
  if (ctx.json) {
    std::cout << ToJson(*r) << "\n";
    return kExitOk;
  }
  Table table({"NODE", "DEVICE", "SLOTS", "USED", "FREE", "JOBS"});
  for (const v1::Node& n : r->nodes()) {
    std::string jobs;
    for (const std::string& j : n.jobs()) jobs += (jobs.empty() ? "" : ",") + j;
    table.Add({n.name() + (n.draining() ? " (draining)" : ""), n.device(), absl::StrCat(n.slots()),
               absl::StrCat(n.used()), absl::StrCat(n.free()), jobs.empty() ? "-" : jobs});
  }
  std::cout << table.Render();
  return kExitOk;
}

}  // namespace kiln::cli
