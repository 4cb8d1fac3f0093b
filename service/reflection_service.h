// gRPC server reflection, both versions: grpc.reflection.v1.ServerReflection (asked
// first by grpcurl >= 1.9, grpcui, Postman) and grpc.reflection.v1alpha.ServerReflection
// (older tools), answering the same thing from the same code.
//
// gRPC 1.51's own reflection plugin serves only v1alpha and lists only the services it
// sees registered, not the typed services that the generic service answers
// (service/typed_service.h). This one lists the names it is given and answers file
// and symbol questions from the generated descriptor pool, where every service sipd
// links lives (the typed packages and the google.rpc error details included). Comments
// are not in the pool: the annotated .proto files are installed under share/sipd/proto
// and printed by `sipctl proto`.
//
// Requests: list_services; file_by_filename, file_containing_symbol,
// file_containing_extension (each answers the file and its dependencies, each file once
// per answer); all_extension_numbers_of_type. An unknown name gets error_response
// NOT_FOUND; a request with nothing set, INVALID_ARGUMENT; the stream goes on.
//
// Thread-safety: a synchronous service, run by gRPC's sync-method threads (reflection
// is rare, and its calls are short); the service list is fixed at construction.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "grpcpp/grpcpp.h"

namespace sipd::service {

class ReflectionServices {
 public:
  // `services`: the full names ListServices answers (both reflection services are added).
  explicit ReflectionServices(std::vector<std::string> services);
  ~ReflectionServices();
  ReflectionServices(const ReflectionServices&) = delete;
  ReflectionServices& operator=(const ReflectionServices&) = delete;

  grpc::Service* v1();
  grpc::Service* v1alpha();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sipd::service
