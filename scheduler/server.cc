// Kilnd assembly: the state directory (created 0700 and locked so two daemons never share it), the
// store, recovery, the gRPC server and the metrics endpoint; and the drain/shutdown sequence.
#include "scheduler/server.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/core/status.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "scheduler/auth.h"
#include "scheduler/limits.h"
#include "scheduler/log.h"

namespace kiln::scheduler {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string HostName() {
  char name[256] = {0};
  gethostname(name, sizeof(name) - 1);
  return name;
}

}  // namespace

Kilnd::~Kilnd() { Shutdown(); }

absl::Status Kilnd::PrepareStateDir() {
  std::error_code ec;
  std::filesystem::create_directories(config_.state_dir + "/jobs", ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("--state-dir ", config_.state_dir, ": ", ec.message()));
  }
  chmod(config_.state_dir.c_str(), 0700);
  const std::string lock_path = config_.state_dir + "/kilnd.lock";
  lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) {
    return absl::UnavailableError(absl::StrCat(lock_path, ": ", std::strerror(errno)));
  }
  if (flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("another kilnd is using --state-dir ", config_.state_dir));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  (void)!ftruncate(lock_fd_, 0);
  (void)!write(lock_fd_, pid.data(), pid.size());
  return absl::OkStatus();
}

std::string Kilnd::ResolveWorkerBinary() const {
  if (!config_.worker_binary.empty()) return std::filesystem::absolute(config_.worker_binary);
  if (const char* env = std::getenv("KILN_WORKER_BINARY"); env != nullptr && *env != '\0') {
    return env;
  }
  std::error_code ec;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  for (const auto& candidate : {self.parent_path() / "kiln-worker",
                                self.parent_path().parent_path() / "worker" / "kiln-worker"}) {
    if (std::filesystem::exists(candidate, ec)) return candidate.string();
  }
  return "kiln-worker";
}

absl::Status Kilnd::Start() {
  SetLogLevel(config_.log_level == "debug"   ? LogLevel::kDebug
              : config_.log_level == "warn"  ? LogLevel::kWarn
              : config_.log_level == "error" ? LogLevel::kError
                                             : LogLevel::kInfo);
  config_.state_dir = std::filesystem::absolute(config_.state_dir).lexically_normal();
  KILN_RETURN_IF_ERROR(PrepareStateDir());
  std::string user_token;
  if (!config_.auth_token_file.empty()) {
    KILN_ASSIGN_OR_RETURN(user_token, ReadTokenFile(config_.auth_token_file));
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  std::string worker_ca;
  if (!config_.tls_cert.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    KILN_ASSIGN_OR_RETURN(std::string cert, ReadFile(config_.tls_cert));
    KILN_ASSIGN_OR_RETURN(std::string key, ReadFile(config_.tls_key));
    ssl.pem_key_cert_pairs.push_back({key, cert});
    credentials = grpc::SslServerCredentials(ssl);
    worker_ca = std::filesystem::absolute(config_.tls_cert);
  }
  KILN_ASSIGN_OR_RETURN(store_, JobStore::Open(config_.state_dir + "/kiln.db", config_.full_sync));

  std::vector<std::string> methods = JobServiceImpl::MethodNames();
  for (const std::string& m : ClusterServiceImpl::MethodNames()) methods.push_back(m);
  metrics_ = std::make_unique<Metrics>(methods);
  kv_ = std::make_unique<KvStore>(store_.get());

  // Bind first (to learn the port workers must dial), start serving after recovery.
  std::string host;
  int port = 0;
  KILN_RETURN_IF_ERROR(SplitHostPort(config_.listen, &host, &port));
  grpc::EnableDefaultHealthCheckService(false);  // Note [Health service]
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(config_.listen, credentials, &grpc_port_);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // a second kilnd must not share it
  // Note [Heartbeat cost]: hundreds of workers each call every second. BDP probing (HTTP/2 PINGs
  // for bandwidth estimation, which tiny messages do not need) only adds wakeups.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // Note [Heartbeat cost]: a heartbeat stream stays open while its connection does. A worker that
  // vanishes without closing its socket (a host lost across a network) would keep its call open
  // forever; a ping every 30 s, unanswered for 20 s, ends such a connection and its calls.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20000);
  // One completion queue for the synchronous services (the default is one per core): fewer
  // threads taking turns at the shared poller. Keep at least two pollers: with one, gRPC's thread
  // manager creates and ends a thread for every call.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 2);

  CoordinatorOptions options;
  options.state_dir = config_.state_dir;
  options.node_name = HostName();
  options.resources = DetectResources(config_.slots, config_.slots_given);
  options.grace_s = config_.grace_s;
  options.worker_binary = ResolveWorkerBinary();
  options.worker_tls_ca = worker_ca;
  if (access(options.worker_binary.c_str(), X_OK) != 0) {
    LogWarn("the worker binary is not executable: jobs will fail to start (see --worker-binary)",
            {{"worker_binary", options.worker_binary}});
  }
  coordinator_ = std::make_unique<Coordinator>(options, store_.get(), kv_.get(), metrics_.get());
  job_service_ = std::make_unique<JobServiceImpl>(coordinator_.get(), metrics_.get(), user_token,
                                                  &streams_, &shutting_down_);
  cluster_service_ = std::make_unique<ClusterServiceImpl>(
      coordinator_.get(), kv_.get(), metrics_.get(), &streams_, &shutting_down_);
  builder.RegisterService(job_service_.get());
  builder.RegisterService(cluster_service_.get());
  health_ = std::make_unique<HealthServiceImpl>(&streams_, &shutting_down_);
  builder.RegisterService(health_.get());
  heartbeats_ = std::make_unique<HeartbeatServer>(&builder, cluster_service_.get(),
                                                  coordinator_.get(), metrics_.get());
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || grpc_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("--listen: cannot listen on ", config_.listen));
  }
  // The Coordinator needs the bound port for the workers' --server; it is set before Recover.
  const std::string dial_host =
      host == "0.0.0.0" || host == "::" || host.empty()
          ? "127.0.0.1"
          : (host.find(':') != std::string::npos ? "[" + host + "]" : host);
  coordinator_->set_worker_server(absl::StrCat(dial_host, ":", grpc_port_));
  KILN_RETURN_IF_ERROR(coordinator_->Recover());
  health_->SetServing(true);

  if (!config_.metrics_listen.empty()) {
    metrics_http_ = std::make_unique<MetricsHttpServer>();
    Coordinator* coordinator = coordinator_.get();
    Metrics* metrics = metrics_.get();
    KILN_ASSIGN_OR_RETURN(metrics_port_, metrics_http_->Start(
                                             config_.metrics_listen,
                                             [coordinator, metrics] {
                                               return metrics->Render(coordinator->Gauges());
                                             },
                                             [coordinator] { return coordinator->draining(); }));
  }
  heartbeats_->Start();
  coordinator_->Start();
  if (!config_.port_file.empty()) {
    const std::string tmp = config_.port_file + ".tmp";
    std::ofstream(tmp) << "grpc=" << grpc_port_ << "\nmetrics=" << metrics_port_ << "\n";
    std::filesystem::rename(tmp, config_.port_file);
  }
  LogInfo("kilnd serving", {{"listen", absl::StrCat(host, ":", grpc_port_)},
                            {"state_dir", config_.state_dir},
                            {"device", options.resources.device},
                            {"slots", options.resources.slots},
                            {"auth", user_token.empty() ? "off" : "bearer"},
                            {"tls", worker_ca.empty() ? "off" : "on"},
                            {"sync", config_.full_sync ? "full" : "normal"},
                            {"metrics_port", metrics_port_},
                            {"worker_binary", options.worker_binary}});
  return absl::OkStatus();
}

void Kilnd::BeginDrain() {
  if (health_ != nullptr) health_->SetServing(false);
  if (coordinator_ != nullptr) coordinator_->BeginDrain();
}

void Kilnd::KillWorkers() {
  if (coordinator_ != nullptr) coordinator_->KillAll();
}

void Kilnd::Shutdown() {
  shutting_down_ = true;
  // Open heartbeat streams never end by themselves (Note [Heartbeat cost]).
  if (heartbeats_ != nullptr) heartbeats_->CancelStreams();
  if (server_ != nullptr) {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (heartbeats_ != nullptr) heartbeats_->Stop();
  server_.reset();
  if (metrics_http_ != nullptr) metrics_http_->Stop();
  if (coordinator_ != nullptr) coordinator_->Stop();
  coordinator_.reset();
  if (lock_fd_ >= 0) {
    close(lock_fd_);
    lock_fd_ = -1;
  }
}

}  // namespace kiln::scheduler
