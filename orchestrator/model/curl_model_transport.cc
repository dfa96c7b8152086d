// CurlModelTransport: see curl_model_transport.h.
#include "orchestrator/model/curl_model_transport.h"

#include <curl/curl.h>

#include <cstddef>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string_view>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace toolmesh::model {
namespace {

using common::HttpHeaders;
using common::ModelStreamId;
using common::TransportResult;

// Response headers beyond this many bytes abort the stream (untrusted peer).
constexpr std::size_t kMaxResponseHeaderBytes = 256 * 1024;

// FinishTransfer's `curl_code` for a stream ended by our idle timer.
constexpr int kIdleTimeoutCode = -1;

// The longest curl_multi_poll wait; curl's own timers may shorten it.
constexpr int kMaxPollMillis = 1000;

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

CURLcode GlobalInit() {
  static std::once_flag once;
  static CURLcode code = CURLE_OK;
  std::call_once(once, [] { code = curl_global_init(CURL_GLOBAL_DEFAULT); });
  return code;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' ||
                        s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

bool IsTokenChar(char c) {
  if (absl::ascii_isalnum(static_cast<unsigned char>(c))) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}

// Headers the transport sets itself; a request may not override them.
bool IsReservedHeader(std::string_view name) {
  for (std::string_view reserved :
       {"x-api-key", "authorization", "anthropic-version", "content-type",
        "content-length", "host", "transfer-encoding", "expect",
        "user-agent", "connection"}) {
    if (absl::EqualsIgnoreCase(std::string(name), std::string(reserved))) {
      return true;
    }
  }
  return false;
}

bool IsValidHeaderValue(std::string_view value) {
  for (char c : value) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

long ToMillis(absl::Duration d) {  // NOLINT(runtime/int): libcurl's type
  return static_cast<long>(  // NOLINT(runtime/int)
      absl::ToInt64Milliseconds(d));
}

}  // namespace

absl::Status CurlModelTransportOptions::Validate() const {
  if (!absl::StartsWith(base_url, "http://") &&
      !absl::StartsWith(base_url, "https://")) {
    return absl::InvalidArgumentError(
        "base_url: must start with http:// or https://");
  }
  if (base_url.find_first_of(" \r\n\t") != std::string::npos) {
    return absl::InvalidArgumentError("base_url: must not contain whitespace");
  }
  if (api_key.empty()) {
    return absl::InvalidArgumentError("api_key: required");
  }
  if (!IsValidHeaderValue(api_key)) {
    return absl::InvalidArgumentError(
        "api_key: must not contain CR, LF or NUL");
  }
  if (anthropic_version.empty() || !IsValidHeaderValue(anthropic_version)) {
    return absl::InvalidArgumentError(
        "anthropic_version: required, without CR, LF or NUL");
  }
  for (const std::string& beta : anthropic_beta) {
    if (beta.empty() || !IsValidHeaderValue(beta) ||
        beta.find(',') != std::string::npos) {
      return absl::InvalidArgumentError(
          "anthropic_beta: each entry must be non-empty, without commas, CR, "
          "LF or NUL");
    }
  }
  if (!IsValidHeaderValue(ca_file) || !IsValidHeaderValue(user_agent)) {
    return absl::InvalidArgumentError(
        "ca_file/user_agent: must not contain CR, LF or NUL");
  }
  if (connect_timeout <= absl::ZeroDuration() ||
      connect_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError("connect_timeout: must be positive");
  }
  if (idle_timeout < absl::ZeroDuration() ||
      idle_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        "idle_timeout: must be zero (off) or positive");
  }
  if (total_timeout < absl::ZeroDuration() ||
      total_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        "total_timeout: must be zero (off) or positive");
  }
  if (max_connections < 1) {
    return absl::InvalidArgumentError("max_connections: must be at least 1");
  }
  return absl::OkStatus();
}

struct CurlModelTransport::MultiHandle {
  CURLM* multi = nullptr;
  ~MultiHandle() {
    if (multi != nullptr) curl_multi_cleanup(multi);
  }
};

// One stream. Owned by the command queue, then by `active_`; touched only by
// the transport thread once queued.
struct CurlModelTransport::Transfer {
  ModelStreamId id = 0;
  std::shared_ptr<common::ModelStreamHandler> handler;
  std::string request_id;
  std::string body;
  // Declared before `easy` so that the handle is cleaned up first.
  std::unique_ptr<curl_slist, SlistDeleter> headers;
  std::unique_ptr<CURL, EasyDeleter> easy;
  char error[CURL_ERROR_SIZE] = {};
  HttpHeaders response_headers;
  std::size_t header_bytes = 0;
  bool headers_too_large = false;
  bool response_started = false;
  bool in_multi = false;
  std::int64_t bytes = 0;
  // When the last byte (header or body) arrived, or the stream was added.
  std::chrono::steady_clock::time_point last_activity;

  int ResponseCode() const {
    long code = 0;  // NOLINT(runtime/int): libcurl's type
    curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &code);
    return static_cast<int>(code);
  }

  void NotifyStarted() {
    if (response_started) return;
    response_started = true;
    handler->OnResponseStarted(ResponseCode(), response_headers);
  }

  static std::size_t OnHeader(char* data, std::size_t size, std::size_t n,
                              void* user) {
    auto* t = static_cast<Transfer*>(user);
    const std::size_t len = size * n;
    t->last_activity = std::chrono::steady_clock::now();
    std::string_view line(data, len);
    if (absl::StartsWith(std::string(line.substr(0, 5)), "HTTP/")) {
      // A new response (after a 1xx): its headers replace the previous ones.
      if (!t->response_started) {
        t->response_headers.clear();
        t->header_bytes = 0;
      }
      return len;
    }
    t->header_bytes += len;
    if (t->header_bytes > kMaxResponseHeaderBytes) {
      t->headers_too_large = true;
      return 0;  // aborts the transfer
    }
    line = Trim(line);
    if (line.empty()) {
      // End of a header block; informational responses are skipped.
      if (t->ResponseCode() >= 200) t->NotifyStarted();
      return len;
    }
    if (t->response_started) return len;  // trailers: not reported
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return len;
    t->response_headers.emplace_back(std::string(Trim(line.substr(0, colon))),
                                     std::string(Trim(line.substr(colon + 1))));
    return len;
  }

  static std::size_t OnWrite(char* data, std::size_t size, std::size_t n,
                             void* user) {
    auto* t = static_cast<Transfer*>(user);
    const std::size_t len = size * n;
    t->last_activity = std::chrono::steady_clock::now();
    t->NotifyStarted();
    t->bytes += static_cast<std::int64_t>(len);
    if (len > 0) t->handler->OnData(std::string_view(data, len));
    return len;
  }
};

absl::StatusOr<std::unique_ptr<CurlModelTransport>> CurlModelTransport::Create(
    CurlModelTransportOptions options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (CURLcode code = GlobalInit(); code != CURLE_OK) {
    return absl::InternalError(
        absl::StrCat("curl_global_init: ", curl_easy_strerror(code)));
  }
  auto multi = std::make_unique<MultiHandle>();
  multi->multi = curl_multi_init();
  if (multi->multi == nullptr) {
    return absl::InternalError("curl_multi_init failed");
  }
  curl_multi_setopt(multi->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS,
                    static_cast<long>(options.max_connections));  // NOLINT
  curl_multi_setopt(multi->multi, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(options.max_connections));  // NOLINT
  curl_multi_setopt(multi->multi, CURLMOPT_PIPELINING,
                    static_cast<long>(CURLPIPE_MULTIPLEX));  // NOLINT
  return std::unique_ptr<CurlModelTransport>(
      new CurlModelTransport(std::move(options), std::move(multi)));
}

CurlModelTransport::CurlModelTransport(CurlModelTransportOptions options,
                                       std::unique_ptr<MultiHandle> multi)
    : options_(std::move(options)),
      url_(absl::StrCat(absl::StripSuffix(options_.base_url, "/"),
                        "/v1/messages")),
      multi_(std::move(multi)),
      thread_([this] { Run(); }) {}

CurlModelTransport::~CurlModelTransport() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  curl_multi_wakeup(multi_->multi);
  thread_.join();
}

int CurlModelTransport::open_streams() const { return open_streams_.load(); }

std::string CurlModelTransport::Redact(std::string text) const {
  if (options_.api_key.empty()) return text;
  return absl::StrReplaceAll(text, {{options_.api_key, "[redacted]"}});
}

absl::StatusOr<ModelStreamId> CurlModelTransport::Start(
    common::ModelRequest request,
    std::shared_ptr<common::ModelStreamHandler> handler) {
  if (handler == nullptr) {
    return absl::InvalidArgumentError("Start: handler is null");
  }
  std::vector<std::string> betas = options_.anthropic_beta;
  std::vector<std::string> extra;
  for (const auto& [name, value] : request.extra_headers) {
    if (name.empty() || !std::all_of(name.begin(), name.end(), IsTokenChar)) {
      return absl::InvalidArgumentError(
          "extra header: the name is not an HTTP token");
    }
    if (!IsValidHeaderValue(value)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "extra header ", name, ": the value contains CR, LF or NUL"));
    }
    if (IsReservedHeader(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("extra header ", name, ": set by the transport"));
    }
    if (absl::EqualsIgnoreCase(name, "anthropic-beta")) {
      if (!Trim(value).empty()) betas.emplace_back(Trim(value));
      continue;
    }
    extra.push_back(absl::StrCat(name, ": ", value));
  }

  auto t = std::make_unique<Transfer>();
  t->handler = std::move(handler);
  t->request_id = std::move(request.request_id);
  t->body = std::move(request.body);
  t->easy.reset(curl_easy_init());
  if (t->easy == nullptr) return absl::InternalError("curl_easy_init failed");

  curl_slist* list = nullptr;
  auto append = [&list](const std::string& line) {
    curl_slist* next = curl_slist_append(list, line.c_str());
    if (next == nullptr) return false;
    list = next;
    return true;
  };
  bool ok = append("content-type: application/json") &&
            append(absl::StrCat("x-api-key: ", options_.api_key)) &&
            append(absl::StrCat("anthropic-version: ",
                                options_.anthropic_version)) &&
            append("Expect:");  // no 100-continue round trip for big bodies
  if (ok && !betas.empty()) {
    ok = append(absl::StrCat("anthropic-beta: ", absl::StrJoin(betas, ",")));
  }
  for (const std::string& line : extra) {
    if (ok) ok = append(line);
  }
  t->headers.reset(list);
  if (!ok) return absl::InternalError("curl_slist_append failed");

  CURL* e = t->easy.get();
  bool set = true;
  auto check = [&set](CURLcode c) { set = set && c == CURLE_OK; };
  check(curl_easy_setopt(e, CURLOPT_URL, url_.c_str()));
  check(curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https"));
  check(curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L));
  check(curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(t->body.size())));
  check(curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body.data()));
  check(curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers.get()));
  check(curl_easy_setopt(e, CURLOPT_USERAGENT, options_.user_agent.c_str()));
  check(curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Transfer::OnHeader));
  check(curl_easy_setopt(e, CURLOPT_HEADERDATA, t.get()));
  check(curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Transfer::OnWrite));
  check(curl_easy_setopt(e, CURLOPT_WRITEDATA, t.get()));
  check(curl_easy_setopt(e, CURLOPT_PRIVATE, t.get()));
  check(curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->error));
  check(curl_easy_setopt(e, CURLOPT_HTTP_VERSION,
                         static_cast<long>(CURL_HTTP_VERSION_2TLS)));  // NOLINT
  check(curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L));
  check(curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L));
  if (!options_.ca_file.empty()) {
    check(curl_easy_setopt(e, CURLOPT_CAINFO, options_.ca_file.c_str()));
  }
  check(curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L));
  check(curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                         ToMillis(options_.connect_timeout)));
  if (options_.total_timeout > absl::ZeroDuration()) {
    check(curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
                           ToMillis(options_.total_timeout)));
  }
  if (absl::StartsWith(url_, "https://")) {
    // Prefer waiting for a multiplexed HTTP/2 connection over opening more.
    check(curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L));
  }
  if (!set) return absl::InternalError("curl_easy_setopt failed");

  ModelStreamId id = 0;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      return absl::FailedPreconditionError(
          "the model transport is shutting down");
    }
    id = next_id_.fetch_add(1);
    t->id = id;
    open_streams_.fetch_add(1);
    commands_.push_back(Command{id, std::move(t)});
  }
  curl_multi_wakeup(multi_->multi);
  return id;
}

void CurlModelTransport::Cancel(ModelStreamId id) {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;  // shutdown cancels everything anyway
    commands_.push_back(Command{id, nullptr});
  }
  curl_multi_wakeup(multi_->multi);
}

bool CurlModelTransport::TakeCommands(std::vector<Command>& out) {
  absl::MutexLock lock(&mu_);
  out.swap(commands_);
  return stopping_;
}

void CurlModelTransport::AddTransfer(std::unique_ptr<Transfer> transfer) {
  const ModelStreamId id = transfer->id;
  Transfer* t = transfer.get();
  t->last_activity = std::chrono::steady_clock::now();
  active_.emplace(id, std::move(transfer));
  CURLMcode code = curl_multi_add_handle(multi_->multi, t->easy.get());
  if (code != CURLM_OK) {
    TransportResult result;
    result.kind = TransportResult::Kind::kConnectionError;
    result.error =
        absl::StrCat("curl_multi_add_handle: ", curl_multi_strerror(code));
    auto it = active_.find(id);
    std::unique_ptr<Transfer> owned = std::move(it->second);
    active_.erase(it);
    open_streams_.fetch_sub(1);
    owned->handler->OnFinished(result);
    return;
  }
  t->in_multi = true;
}

void CurlModelTransport::FinishTransfer(ModelStreamId id,
                                        TransportResult::Kind kind,
                                        int curl_code) {
  auto it = active_.find(id);
  if (it == active_.end()) return;
  std::unique_ptr<Transfer> t = std::move(it->second);
  active_.erase(it);
  if (t->in_multi) {
    curl_multi_remove_handle(multi_->multi, t->easy.get());
    t->in_multi = false;
  }
  TransportResult result;
  result.kind = kind;
  result.bytes_received = t->bytes;
  result.http_status = t->response_started ? t->ResponseCode() : 0;
  if (kind == TransportResult::Kind::kCancelled) {
    result.error = "cancelled";
  } else if (curl_code == kIdleTimeoutCode) {
    result.error = absl::StrCat("idle timeout: no data for ",
                                absl::FormatDuration(options_.idle_timeout));
  } else if (kind != TransportResult::Kind::kCompleted &&
             kind != TransportResult::Kind::kHttpError) {
    const auto code = static_cast<CURLcode>(curl_code);
    std::string detail = t->headers_too_large
                             ? std::string("response headers too large")
                         : t->error[0] != '\0' ? std::string(t->error)
                                               : curl_easy_strerror(code);
    result.error = Redact(
        absl::StrCat("curl error ", curl_code, ": ", detail));
  }
  open_streams_.fetch_sub(1);
  t->handler->OnFinished(result);
}

void CurlModelTransport::ReadCompletions() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_->multi, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    char* priv = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
    auto* t = reinterpret_cast<Transfer*>(priv);
    if (t == nullptr) continue;
    const CURLcode code = msg->data.result;
    TransportResult::Kind kind = TransportResult::Kind::kConnectionError;
    if (code == CURLE_OK) {
      const int status = t->ResponseCode();
      if (status >= 200 && status < 300) {
        kind = TransportResult::Kind::kCompleted;
      } else if (status >= 300) {
        kind = TransportResult::Kind::kHttpError;
      }
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
      kind = TransportResult::Kind::kTimeout;
    }
    FinishTransfer(t->id, kind, static_cast<int>(code));
  }
}

int CurlModelTransport::ExpireIdle() {
  if (options_.idle_timeout <= absl::ZeroDuration() || active_.empty()) {
    return kMaxPollMillis;
  }
  const auto idle = std::chrono::microseconds(
      absl::ToInt64Microseconds(options_.idle_timeout));
  const auto now = std::chrono::steady_clock::now();
  auto next = now + std::chrono::milliseconds(kMaxPollMillis);
  std::vector<ModelStreamId> expired;
  for (const auto& [id, transfer] : active_) {
    const auto deadline = transfer->last_activity + idle;
    if (deadline <= now) {
      expired.push_back(id);
    } else if (deadline < next) {
      next = deadline;
    }
  }
  for (ModelStreamId id : expired) {
    FinishTransfer(id, TransportResult::Kind::kTimeout, kIdleTimeoutCode);
  }
  // Round up so that the deadline has passed when the poll returns.
  const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - now);
  return static_cast<int>(std::max<std::int64_t>(wait.count(), 1));
}

void CurlModelTransport::Run() {
  std::vector<Command> commands;
  while (true) {
    const bool stop = TakeCommands(commands);
    for (Command& command : commands) {
      if (command.start != nullptr) {
        AddTransfer(std::move(command.start));
      } else {
        FinishTransfer(command.id, TransportResult::Kind::kCancelled, 0);
      }
    }
    commands.clear();
    if (stop) break;
    int running = 0;
    curl_multi_perform(multi_->multi, &running);
    ReadCompletions();
    const int wait_ms = ExpireIdle();
    // Returns early on socket activity, curl's own timers (timeouts) or a
    // curl_multi_wakeup from Start/Cancel/the destructor.
    curl_multi_poll(multi_->multi, nullptr, 0, wait_ms, nullptr);
  }
  // Shutdown: Start() refuses new streams from now on, so these are all.
  while (!active_.empty()) {
    FinishTransfer(active_.begin()->first, TransportResult::Kind::kCancelled,
                   0);
  }
}

}  // namespace toolmesh::model
