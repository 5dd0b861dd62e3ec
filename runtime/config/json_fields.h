// Typed access to the members of one JSON object, with errors that name the file and the full key path
// ("config.json: key 'rope_scaling.factor': expected a number, got string"). Used by the config parsers.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace dsv4 {

/// Parses a JSON document. A syntax error becomes Error(kInvalidArgument) naming `origin`, the line and the
/// column of the offending character.
nlohmann::json parse_json_document(const std::string& text, const std::string& origin);

/// A read-only view of one JSON object. A member that is absent or null counts as missing.
class JsonFields {
 public:
  /// `prefix` is the key path of this object inside the document ("" for the root, "rope_scaling." below it).
  JsonFields(const nlohmann::json& object, std::string origin, std::string prefix);

  bool has(const std::string& key) const;

  // Required members: missing or of the wrong type -> Error(kInvalidArgument) naming the key.
  int64_t integer(const std::string& key) const;
  double number(const std::string& key) const;  // any JSON number
  bool boolean(const std::string& key) const;
  std::string string(const std::string& key) const;
  std::vector<int64_t> integer_array(const std::string& key) const;
  std::vector<std::string> string_array(const std::string& key) const;
  /// The member as an object, for nested reads; errors below it carry the path "key.sub".
  JsonFields object(const std::string& key) const;

  // Optional members: the fallback when missing, an error when present with the wrong type.
  int64_t integer_or(const std::string& key, int64_t fallback) const;
  double number_or(const std::string& key, double fallback) const;
  bool boolean_or(const std::string& key, bool fallback) const;
  /// An integer, or the first element of a non-empty integer list (transformers allows eos_token_id lists).
  int64_t first_integer_or(const std::string& key, int64_t fallback) const;

  /// Throws Error(kInvalidArgument): "<origin>: key '<prefix><key>' <what>".
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;
  /// Throws Error(kInvalidArgument): "<origin>: missing required key '<prefix><key>'".
  [[noreturn]] void fail_missing(const std::string& key) const;

 private:
  const nlohmann::json& member(const std::string& key) const;  // present or fail_missing
  int64_t to_integer(const nlohmann::json& value, const std::string& key) const;

  const nlohmann::json& object_;
  std::string origin_;
  std::string prefix_;
};

}  // namespace dsv4
