#include "runtime/config/json_fields.h"

#include <algorithm>
#include <limits>

#include "runtime/core/error.h"

namespace dsv4 {

using nlohmann::json;

json parse_json_document(const std::string& text, const std::string& origin) {
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    // e.byte is the 1-based index of the character that stopped the parser; turn it into line:column.
    const size_t end = std::min(e.byte == 0 ? size_t{0} : e.byte - 1, text.size());
    int64_t line = 1;
    int64_t column = 1;
    for (size_t i = 0; i < end; ++i) {
      if (text[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    DSV4_THROW(kInvalidArgument) << origin << ":" << line << ":" << column << ": malformed JSON: " << e.what();
  }
}

JsonFields::JsonFields(const json& object, std::string origin, std::string prefix)
    : object_(object), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

bool JsonFields::has(const std::string& key) const {
  auto it = object_.find(key);
  return it != object_.end() && !it->is_null();
}

void JsonFields::fail(const std::string& key, const std::string& what) const {
  DSV4_THROW(kInvalidArgument) << origin_ << ": key '" << prefix_ << key << "' " << what;
}

void JsonFields::fail_missing(const std::string& key) const {
  DSV4_THROW(kInvalidArgument) << origin_ << ": missing required key '" << prefix_ << key << "'";
}

const json& JsonFields::member(const std::string& key) const {
  auto it = object_.find(key);
  if (it == object_.end() || it->is_null()) fail_missing(key);
  return *it;
}

int64_t JsonFields::to_integer(const json& value, const std::string& key) const {
  // Booleans are not numbers here, and 4096.0 is not an integer: both point at a mistyped file.
  if (value.is_number_unsigned()) {
    const uint64_t u = value.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail(key, "is too large");
    return static_cast<int64_t>(u);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  fail(key, std::string("expected an integer, got ") + value.type_name() + " " + value.dump());
}

int64_t JsonFields::integer(const std::string& key) const { return to_integer(member(key), key); }

double JsonFields::number(const std::string& key) const {
  const json& value = member(key);
  if (!value.is_number()) fail(key, std::string("expected a number, got ") + value.type_name() + " " + value.dump());
  return value.get<double>();
}

bool JsonFields::boolean(const std::string& key) const {
  const json& value = member(key);
  if (!value.is_boolean()) fail(key, std::string("expected true or false, got ") + value.type_name());
  return value.get<bool>();
}

std::string JsonFields::string(const std::string& key) const {
  const json& value = member(key);
  if (!value.is_string()) fail(key, std::string("expected a string, got ") + value.type_name());
  return value.get<std::string>();
}

std::vector<int64_t> JsonFields::integer_array(const std::string& key) const {
  const json& value = member(key);
  if (!value.is_array()) fail(key, std::string("expected a list of integers, got ") + value.type_name());
  std::vector<int64_t> out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) out.push_back(to_integer(value[i], key + "[" + std::to_string(i) + "]"));
  return out;
}

std::vector<std::string> JsonFields::string_array(const std::string& key) const {
  const json& value = member(key);
  if (!value.is_array()) fail(key, std::string("expected a list of strings, got ") + value.type_name());
  std::vector<std::string> out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) {
      fail(key + "[" + std::to_string(i) + "]", std::string("expected a string, got ") + value[i].type_name());
    }
    out.push_back(value[i].get<std::string>());
  }
  return out;
}

JsonFields JsonFields::object(const std::string& key) const {
  const json& value = member(key);
  if (!value.is_object()) fail(key, std::string("expected an object, got ") + value.type_name());
  return JsonFields(value, origin_, prefix_ + key + ".");
}

int64_t JsonFields::integer_or(const std::string& key, int64_t fallback) const {
  return has(key) ? integer(key) : fallback;
}

double JsonFields::number_or(const std::string& key, double fallback) const {
  return has(key) ? number(key) : fallback;
}

bool JsonFields::boolean_or(const std::string& key, bool fallback) const {
  return has(key) ? boolean(key) : fallback;
}

int64_t JsonFields::first_integer_or(const std::string& key, int64_t fallback) const {
  if (!has(key)) return fallback;
  const json& value = member(key);
  if (value.is_array()) {
    if (value.empty()) fail(key, "is an empty list");
    return to_integer(value[0], key + "[0]");
  }
  return to_integer(value, key);
}

}  // namespace dsv4
