// HTTP-backed tools (http_executor.h).
#include "worker/http_executor.h"

#include <curl/curl.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace toolmesh::worker {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int kPollMs = 1000;

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct MultiDeleter {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

struct Body {
  std::string data;
  size_t cap = 0;
  bool truncated = false;
};

size_t WriteBody(char* ptr, size_t size, size_t nmemb, void* user) {
  auto* body = static_cast<Body*>(user);
  size_t n = size * nmemb;
  size_t room = body->cap - body->data.size();
  if (n > room) body->truncated = true;
  body->data.append(ptr, std::min(n, room));
  // Report everything as consumed: the rest is discarded, not an error.
  return n;
}

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

class HttpExecutor::Call final : public CallState {
 public:
  explicit Call(common::ToolUseId call_id) : CallState(std::move(call_id)) {}

  absl::Mutex mu;
  // The call's multi handle while its request runs.
  CURLM* multi ABSL_GUARDED_BY(mu) = nullptr;

 protected:
  // Interrupts the call's curl_multi_poll.
  void Wake() override {
    absl::MutexLock lock(&mu);
    if (multi != nullptr) curl_multi_wakeup(multi);
  }
};

HttpExecutor::HttpExecutor(HttpSpec spec, HttpOptions options)
    : spec_(std::move(spec)), options_(options) {
  GlobalInitOnce();
}

HttpExecutor::~HttpExecutor() = default;

void HttpExecutor::Run(const ToolCall& call, DoneCallback done) {
  auto state = std::make_shared<Call>(call.id);
  calls_.Start(
      state,
      [this, state, body = common::DumpJson(call.input)]() {
        return Post(*state, body);
      },
      std::move(done));
}

bool HttpExecutor::Cancel(const common::ToolUseId& id) {
  return calls_.Cancel(id);
}

ToolOutcome HttpExecutor::Post(Call& call, const std::string& body) {
  const SteadyClock::time_point start = SteadyClock::now();
  auto elapsed = [&start]() {
    return absl::FromChrono(SteadyClock::now() - start);
  };

  std::unique_ptr<CURL, EasyDeleter> easy(curl_easy_init());
  std::unique_ptr<CURLM, MultiDeleter> multi(curl_multi_init());
  std::unique_ptr<curl_slist, SlistDeleter> headers(
      curl_slist_append(nullptr, "Content-Type: application/json"));
  if (headers != nullptr) {
    // Send the body at once rather than waiting for "100 Continue".
    curl_slist* more = curl_slist_append(headers.get(), "Expect:");
    if (more == nullptr) headers.reset();
  }
  if (easy == nullptr || multi == nullptr || headers == nullptr) {
    return ErrorOutcome(OutcomeReason::kToolFailed,
                        "cannot set up an HTTP request (libcurl)", elapsed());
  }

  Body response;
  response.cap = options_.max_body_bytes;
  char error_text[CURL_ERROR_SIZE] = {0};
  CURL* h = easy.get();
  curl_easy_setopt(h, CURLOPT_URL, spec_.url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
                   static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS,
                   static_cast<long>(absl::ToInt64Milliseconds(spec_.timeout)));
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &WriteBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_text);
  curl_multi_add_handle(multi.get(), h);
  {
    absl::MutexLock lock(&call.mu);
    call.multi = multi.get();
  }

  CURLcode result = CURLE_OK;
  bool finished = false;
  while (!call.cancelled()) {
    int running = 0;
    if (curl_multi_perform(multi.get(), &running) != CURLM_OK) {
      result = CURLE_FAILED_INIT;
      finished = true;
      break;
    }
    int queued = 0;
    if (CURLMsg* msg = curl_multi_info_read(multi.get(), &queued);
        msg != nullptr && msg->msg == CURLMSG_DONE) {
      result = msg->data.result;
      finished = true;
      break;
    }
    curl_multi_poll(multi.get(), nullptr, 0, kPollMs, nullptr);
  }
  {
    absl::MutexLock lock(&call.mu);
    call.multi = nullptr;
  }
  curl_multi_remove_handle(multi.get(), h);
  const absl::Duration duration = elapsed();

  if (!finished) {
    return ErrorOutcome(OutcomeReason::kCancelled, "cancelled", duration);
  }
  if (result == CURLE_OPERATION_TIMEDOUT) {
    return ErrorOutcome(
        OutcomeReason::kTimeout,
        absl::StrCat("timed out after ", absl::ToInt64Milliseconds(spec_.timeout),
                     " ms waiting for ", spec_.url),
        duration);
  }
  if (result != CURLE_OK) {
    std::string detail =
        error_text[0] != '\0' ? error_text : curl_easy_strerror(result);
    return ErrorOutcome(
        OutcomeReason::kToolFailed,
        absl::StrCat("request to ", spec_.url, " failed: ", detail), duration);
  }
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299) {
    std::string excerpt = response.data.substr(
        0, std::min(response.data.size(), options_.error_body_bytes));
    bool cut = response.truncated ||
               excerpt.size() < response.data.size();
    return ErrorOutcome(
        OutcomeReason::kToolFailed,
        absl::StrCat("HTTP ", status, " from ", spec_.url,
                     excerpt.empty() ? "" : ": ", excerpt,
                     cut ? " [truncated]" : ""),
        duration);
  }
  std::string content = std::move(response.data);
  if (response.truncated) {
    absl::StrAppend(&content, "\n[toolmesh: output truncated at ",
                    options_.max_body_bytes, " bytes]");
  }
  ToolOutcome outcome;
  outcome.content = std::move(content);
  outcome.duration = duration;
  return outcome;
}

}  // namespace toolmesh::worker
