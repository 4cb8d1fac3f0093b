#include "legacy-transports/text/argument_parser.h"

#include "absl/strings/str_cat.h"

namespace sipd::legacy {
namespace {

constexpr std::string_view kWhitespace = " \t\r\n";

std::string_view TrimLeft(std::string_view s) {
  size_t start = s.find_first_not_of(kWhitespace);
  return start == std::string_view::npos ? s.substr(s.size()) : s.substr(start);
}

std::string_view TrimRight(std::string_view s) {
  size_t end = s.find_last_not_of(kWhitespace);
  return end == std::string_view::npos ? s.substr(0, 0) : s.substr(0, end + 1);
}

std::string_view Trim(std::string_view s) { return TrimRight(TrimLeft(s)); }

bool HasQuote(std::string_view s) { return s.find('"') != std::string_view::npos; }

}  // namespace

void ArgumentParser::Begin(std::vector<mi::Argument>* args) {
  args_ = args;
  args_->clear();
  bytes_ = 0;
  in_quote_ = false;
  failed_ = false;
}

absl::Status ArgumentParser::Fail(std::string_view why) {
  failed_ = true;
  in_quote_ = false;
  return absl::InvalidArgumentError(absl::string_view(why.data(), why.size()));
}

absl::Status ArgumentParser::FeedLine(std::string_view line) {
  if (failed_) return absl::InvalidArgumentError("request already rejected");
  bytes_ += line.size();
  if (bytes_ > max_bytes_) {
    return Fail(absl::StrCat("arguments longer than ", max_bytes_, " bytes"));
  }
  if (in_quote_) {
    // Only a bare LF is an empty line: a lone CRLF inside a quoted value is data (a
    // header block may carry an empty CRLF line).
    if (line.empty() || line == "\n") return Fail("empty line inside a quoted value");
    return ScanQuoted(line);
  }
  const std::string_view trimmed = Trim(line);
  if (trimmed.empty()) return absl::OkStatus();
  if (trimmed.front() == '"') {
    args_->emplace_back();
    in_quote_ = true;
    return ScanQuoted(line.substr(static_cast<size_t>(trimmed.data() + 1 - line.data())));
  }
  const size_t colons = trimmed.find("::");
  if (colons == std::string_view::npos) {
    if (HasQuote(trimmed)) return Fail("'\"' inside an unquoted value");
    return AddNode({}, trimmed);
  }
  const std::string_view name = TrimRight(trimmed.substr(0, colons));
  const std::string_view rest = TrimLeft(trimmed.substr(colons + 2));
  if (HasQuote(name)) return Fail("'\"' inside an argument name");
  if (!rest.empty() && rest.front() == '"') {
    args_->push_back(mi::Argument{std::string(name), {}});
    in_quote_ = true;
    return ScanQuoted(line.substr(static_cast<size_t>(rest.data() + 1 - line.data())));
  }
  if (HasQuote(rest)) return Fail("'\"' inside an unquoted value");
  return AddNode(name, rest);
}

absl::Status ArgumentParser::ScanQuoted(std::string_view segment) {
  std::string& value = args_->back().value;
  size_t run_start = 0;
  size_t i = 0;
  while ((i = segment.find_first_of("\\\"", i)) != std::string_view::npos) {
    if (segment[i] == '\\') {
      if (i + 1 < segment.size() && segment[i + 1] == '"') {
        value.append(segment.substr(run_start, i - run_start)).push_back('"');
        i += 2;
        run_start = i;
      } else {
        ++i;  // a backslash before anything else is literal
      }
      continue;
    }
    // The closing quote: only whitespace may follow on this line.
    value.append(segment.substr(run_start, i - run_start));
    in_quote_ = false;
    if (!Trim(segment.substr(i + 1)).empty()) return Fail("text after a closing quote");
    if (args_->back().name.empty() && value.empty()) {
      return Fail("argument with neither name nor value");
    }
    return absl::OkStatus();
  }
  value.append(segment.substr(run_start));  // the line break belongs to the value
  return absl::OkStatus();
}

absl::Status ArgumentParser::AddNode(std::string_view name, std::string_view value) {
  if (name.empty() && value.empty()) return Fail("argument with neither name nor value");
  args_->push_back(mi::Argument{std::string(name), std::string(value)});
  return absl::OkStatus();
}

absl::Status ArgumentParser::Finish() {
  if (failed_) return absl::InvalidArgumentError("request already rejected");
  if (in_quote_) return Fail("quoted value not terminated");
  return absl::OkStatus();
}

absl::Status ArgumentParser::ParseAll(std::string_view text, std::vector<mi::Argument>* args) {
  Begin(args);
  while (!text.empty()) {
    const size_t lf = text.find('\n');
    const size_t line_size = lf == std::string_view::npos ? text.size() : lf + 1;
    absl::Status status = FeedLine(text.substr(0, line_size));
    if (!status.ok()) return status;
    text.remove_prefix(line_size);
  }
  return Finish();
}

}  // namespace sipd::legacy
