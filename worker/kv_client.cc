// KvClient: the four key-value RPCs with the worker's token and identity.
#include "worker/kv_client.h"

namespace kiln::worker {
namespace {

constexpr absl::Duration kRpcTimeout = absl::Seconds(10);

}  // namespace

absl::Status KvClient::Set(const std::string& key, const std::string& value) {
  v1::KvSetRequest request;
  *request.mutable_worker() = link_->worker();
  request.set_key(key);
  request.set_value(value);
  v1::KvSetResponse response;
  auto context = link_->Context(kRpcTimeout);
  return FromGrpc(link_->stub()->Set(context.get(), request, &response));
}

absl::StatusOr<std::optional<std::string>> KvClient::Get(const std::string& key) {
  v1::KvGetRequest request;
  *request.mutable_worker() = link_->worker();
  request.set_key(key);
  v1::KvGetResponse response;
  auto context = link_->Context(kRpcTimeout);
  absl::Status s = FromGrpc(link_->stub()->Get(context.get(), request, &response));
  if (!s.ok()) return s;
  if (!response.found()) return std::optional<std::string>();
  return std::optional<std::string>(response.value());
}

absl::Status KvClient::Wait(const std::vector<std::string>& keys, absl::Duration timeout) {
  v1::KvWaitRequest request;
  *request.mutable_worker() = link_->worker();
  for (const std::string& k : keys) request.add_keys(k);
  request.set_timeout_ms(static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  v1::KvWaitResponse response;
  auto context = link_->Context(timeout + kRpcTimeout);
  return FromGrpc(link_->stub()->Wait(context.get(), request, &response));
}

absl::StatusOr<int64_t> KvClient::Add(const std::string& key, int64_t delta) {
  v1::KvAddRequest request;
  *request.mutable_worker() = link_->worker();
  request.set_key(key);
  request.set_delta(delta);
  v1::KvAddResponse response;
  auto context = link_->Context(kRpcTimeout);
  absl::Status s = FromGrpc(link_->stub()->Add(context.get(), request, &response));
  if (!s.ok()) return s;
  return response.value();
}

}  // namespace kiln::worker
