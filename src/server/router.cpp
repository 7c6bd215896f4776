// Path/method routing with OpenAI-shaped 401/404/405 errors (see router.h).
#include "server/router.h"

#include "common/error.h"
#include "common/log.h"

namespace mxs::server {

HttpResponse json_response(int status, const nlohmann::json& body) {
  HttpResponse r;
  r.status = status;
  r.body = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return r;
}

HttpResponse error_response(const ApiError& e, std::vector<std::pair<std::string, std::string>> headers) {
  HttpResponse r = json_response(e.status, error_json(e));
  r.headers = std::move(headers);
  return r;
}

namespace {

// "/a/b" matches itself; "/a/*" matches "/a/" followed by one non-empty segment.
bool path_matches(const std::string& route, const std::string& path) {
  if (route.size() < 2 || route.compare(route.size() - 2, 2, "/*") != 0) return route == path;
  const size_t prefix = route.size() - 1;  // (keeps the '/')
  return path.size() > prefix && path.compare(0, prefix, route, 0, prefix) == 0 &&
         path.find('/', prefix) == std::string::npos;
}

}  // namespace

void Router::add(const std::string& method, const std::string& path, HttpHandler handler) {
  routes_.push_back({method, path, std::move(handler)});
}

void Router::dispatch(HttpRequest&& request, const std::shared_ptr<HttpExchange>& exchange) const {
  std::string allow;
  const Route* match = nullptr;
  for (const Route& r : routes_) {
    if (!path_matches(r.path, request.path)) continue;
    if (r.method == request.method) {
      match = &r;
      break;
    }
    allow += (allow.empty() ? "" : ", ") + r.method;
  }
  if (!match) {
    ApiError e;
    if (allow.empty()) {
      e.status = 404;
      e.message = strfmt("unknown route %s %s", request.method.c_str(), request.path.c_str());
      e.code = "not_found";
    } else {
      e.status = 405;
      e.message = strfmt("method %s is not allowed on %s (allowed: %s)", request.method.c_str(), request.path.c_str(),
                         allow.c_str());
      e.code = "method_not_allowed";
    }
    exchange->respond(error_response(
        e, allow.empty() ? decltype(HttpResponse::headers){} : decltype(HttpResponse::headers){{"Allow", allow}}));
    return;
  }
  if (auth_.enabled() && request.path.rfind(protected_prefix_, 0) == 0 &&
      !auth_.allows(request.header("authorization"))) {
    ApiError e;
    e.status = 401;
    e.message = "invalid or missing API key: send 'Authorization: Bearer <key>'";
    e.code = "invalid_api_key";
    exchange->respond(error_response(e, {{"WWW-Authenticate", "Bearer"}}));
    return;
  }
  const std::string method = request.method, path = request.path;  // for the log line; request moves
  MXS_LOG_DEBUG("http: %s %s (%zu bytes)", method.c_str(), path.c_str(), request.body.size());
  try {
    match->handler(std::move(request), exchange);
  } catch (const ApiException& e) {
    decltype(HttpResponse::headers) headers;
    if (e.error.retry_after_s > 0) headers.emplace_back("Retry-After", std::to_string(e.error.retry_after_s));
    exchange->respond(error_response(e.error, std::move(headers)));
  } catch (const mxs::Error& e) {  // user-caused, not mapped more precisely by the handler
    ApiError err;
    err.message = e.what();
    exchange->respond(error_response(err));
  } catch (const std::exception& e) {
    MXS_LOG_ERROR("%s %s failed: %s", method.c_str(), path.c_str(), e.what());
    ApiError err;
    err.status = 500;
    err.type = "server_error";
    err.message = strfmt("internal error: %s", e.what());
    exchange->respond(error_response(err));
  }
}

}  // namespace mxs::server
