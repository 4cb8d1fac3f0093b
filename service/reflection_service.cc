#include "service/reflection_service.h"

#include <string>
#include <unordered_set>
#include <utility>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"

namespace sipd::service {
namespace {

using google::protobuf::DescriptorPool;
using google::protobuf::FileDescriptor;

// The same answer for both versions: their messages have the same fields.
template <typename Request, typename Response>
void Answer(const std::vector<std::string>& services, const Request& request, Response* response) {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  response->set_valid_host(request.host());
  *response->mutable_original_request() = request;
  std::unordered_set<std::string> sent;
  // The file, then each dependency not sent yet in this answer.
  auto add_file = [&](const FileDescriptor* file, auto&& self) -> void {
    if (!sent.insert(file->name()).second) return;
    google::protobuf::FileDescriptorProto proto;
    file->CopyTo(&proto);
    response->mutable_file_descriptor_response()->add_file_descriptor_proto(
        proto.SerializeAsString());
    for (int i = 0; i < file->dependency_count(); ++i) self(file->dependency(i), self);
  };
  auto not_found = [&](const std::string& what) {
    auto* error = response->mutable_error_response();
    error->set_error_code(static_cast<int32_t>(grpc::StatusCode::NOT_FOUND));
    error->set_error_message(what);
  };
  switch (request.message_request_case()) {
    case Request::kListServices:
      for (const std::string& name : services) {
        response->mutable_list_services_response()->add_service()->set_name(name);
      }
      break;
    case Request::kFileByFilename:
      if (const FileDescriptor* file = pool->FindFileByName(request.file_by_filename())) {
        add_file(file, add_file);
      } else {
        not_found("file not found: " + request.file_by_filename());
      }
      break;
    case Request::kFileContainingSymbol:
      if (const FileDescriptor* file =
              pool->FindFileContainingSymbol(request.file_containing_symbol())) {
        add_file(file, add_file);
      } else {
        not_found("symbol not found: " + request.file_containing_symbol());
      }
      break;
    case Request::kFileContainingExtension: {
      const auto& ext = request.file_containing_extension();
      const auto* type = pool->FindMessageTypeByName(ext.containing_type());
      const auto* field =
          type == nullptr ? nullptr : pool->FindExtensionByNumber(type, ext.extension_number());
      if (field != nullptr) {
        add_file(field->file(), add_file);
      } else {
        not_found("extension not found: " + ext.containing_type() + " " +
                  std::to_string(ext.extension_number()));
      }
      break;
    }
    case Request::kAllExtensionNumbersOfType: {
      const auto* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
      if (type == nullptr) {
        not_found("type not found: " + request.all_extension_numbers_of_type());
        break;
      }
      std::vector<const google::protobuf::FieldDescriptor*> extensions;
      pool->FindAllExtensions(type, &extensions);
      auto* out = response->mutable_all_extension_numbers_response();
      out->set_base_type_name(type->full_name());
      for (const auto* e : extensions) out->add_extension_number(e->number());
      break;
    }
    default: {
      auto* error = response->mutable_error_response();
      error->set_error_code(static_cast<int32_t>(grpc::StatusCode::INVALID_ARGUMENT));
      error->set_error_message("empty reflection request");
      break;
    }
  }
}

template <typename Service, typename Request, typename Response>
class Reflection final : public Service {
 public:
  explicit Reflection(const std::vector<std::string>* services) : services_(services) {}

  grpc::Status ServerReflectionInfo(grpc::ServerContext* context,
                                    grpc::ServerReaderWriter<Response, Request>* stream) override {
    Request request;
    while (!context->IsCancelled() && stream->Read(&request)) {
      Response response;
      Answer(*services_, request, &response);
      if (!stream->Write(response)) break;
    }
    return grpc::Status::OK;
  }

 private:
  const std::vector<std::string>* services_;
};

namespace v1 = ::grpc::reflection::v1;
namespace v1alpha = ::grpc::reflection::v1alpha;

}  // namespace

struct ReflectionServices::Impl {
  explicit Impl(std::vector<std::string> names) : services(std::move(names)) {}
  std::vector<std::string> services;
  Reflection<v1::ServerReflection::Service, v1::ServerReflectionRequest,
             v1::ServerReflectionResponse>
      v1_service{&services};
  Reflection<v1alpha::ServerReflection::Service, v1alpha::ServerReflectionRequest,
             v1alpha::ServerReflectionResponse>
      v1alpha_service{&services};
};

ReflectionServices::ReflectionServices(std::vector<std::string> services) {
  services.push_back("grpc.reflection.v1.ServerReflection");
  services.push_back("grpc.reflection.v1alpha.ServerReflection");
  impl_ = std::make_unique<Impl>(std::move(services));
}

ReflectionServices::~ReflectionServices() = default;

grpc::Service* ReflectionServices::v1() { return &impl_->v1_service; }
grpc::Service* ReflectionServices::v1alpha() { return &impl_->v1alpha_service; }

}  // namespace sipd::service
