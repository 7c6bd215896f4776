// Request routing by path and method (exact, or "/prefix/*" for one more path segment): an unknown path is 404, a known path with another method is
// 405 with an Allow header, both in the OpenAI error envelope. Paths under a protected prefix (/v1/) need
// the API key when one is configured (401 otherwise).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "server/auth.h"
#include "server/http_server.h"
#include "server/openai_schema.h"

namespace mxs::server {

// JSON error response in the OpenAI envelope (plus Retry-After etc. in `headers`).
HttpResponse error_response(const ApiError& e, std::vector<std::pair<std::string, std::string>> headers = {});
HttpResponse json_response(int status, const nlohmann::json& body);

class Router {
 public:
  explicit Router(ApiKeyAuth auth, std::string protected_prefix = "/v1/")
      : auth_(std::move(auth)), protected_prefix_(std::move(protected_prefix)) {}

  void add(const std::string& method, const std::string& path, HttpHandler handler);
  // Dispatches; handler exceptions become error responses (ApiException: its status; others: 500).
  void dispatch(HttpRequest&& request, const std::shared_ptr<HttpExchange>& exchange) const;

 private:
  struct Route {
    std::string method, path;
    HttpHandler handler;
  };
  ApiKeyAuth auth_;
  std::string protected_prefix_;
  std::vector<Route> routes_;
};

}  // namespace mxs::server
