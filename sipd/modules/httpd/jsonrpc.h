// JSON-RPC 2.0 over HTTP (POST /mi), as OpenSIPS 3.x mi_http: parsing a body into MI
// requests. Writing replies is json_reply.h; running them is rpc_job.h.
//
//   {"jsonrpc":"2.0","method":"get_statistics","params":["core:"],"id":1}
//   [ {...}, {...} ]                                   a batch (at most max_batch)
//
// "params": an array (positional MI arguments) or an object (named arguments, in the
// object's order). Strings are taken as they are, numbers and booleans as their JSON
// text; null, arrays and objects are an argument error the dispatcher reports as the
// MI parse error (400) of that command. A request without "id" is a notification: it
// runs, and gets no response.
//
// Protocol errors use JSON-RPC's codes: -32700 (body is not JSON), -32600 (not a request
// object, empty batch, batch over max_batch). Everything from the MI itself uses the MI
// code and reason (json_reply.h).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "registry/command.h"

namespace sipd::httpd {

inline constexpr int kJsonRpcParseError = -32700;
inline constexpr int kJsonRpcInvalidRequest = -32600;

struct RpcCall {
  // The id in JSON form ("1", "\"abc\"", "null").
  std::string id_json = "null";
  bool notification = false;
  // Set when the element is not a valid request: the whole response to write.
  std::string invalid_response;
  mi::Request request;
};

struct RpcBody {
  bool batch = false;
  std::vector<RpcCall> calls;
  // Set when the body as a whole is refused (parse error, empty or oversized batch):
  // the whole response to write, and `calls` is empty.
  std::string error_response;
};

RpcBody ParseJsonRpc(std::string_view body, size_t max_batch);

}  // namespace sipd::httpd
