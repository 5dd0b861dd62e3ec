// `dsv4 tokenize`: text -> token ids (a JSON array on stdout), or ids -> text with --decode.
// `dsv4 chat-template`: renders a JSON list of chat messages into the DSV4 prompt (spec §8.2).
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "launcher/cli/command.h"
#include "runtime/core/error.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/chat_encoding.h"
#include "runtime/tokenizer/dsv4_tokenizer.h"

namespace dsv4::cli {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  DSV4_CHECK_CODE(in.good(), ErrorCode::kNotFound) << "cannot open " << path;
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// "[1, 2, 3]" or "1,2,3" or "1 2 3" -> ids.
std::vector<TokenId> parse_ids(const std::string& text) {
  std::string s = text;
  for (char& c : s) {
    if (c == '[' || c == ']' || c == ',' || c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  std::istringstream in(s);
  std::vector<TokenId> ids;
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    DSV4_CHECK_ARG(used == word.size() && v >= 0 && v < (1LL << 31)) << "--decode: '" << word << "' is not a token id";
    ids.push_back(static_cast<TokenId>(v));
  }
  return ids;
}

BpeTokenizer load_tokenizer(const std::string& path, bool dsv4) {
  return dsv4 ? load_dsv4_tokenizer(path) : BpeTokenizer::from_file(path);
}

void setup_tokenize(CLI::App& app) {
  struct Opts {
    std::string tokenizer, text, input;
    bool decode = false, dsv4 = false, no_added = false;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("tokenize", "Encode text to token ids (JSON array), or decode ids with --decode");
  cmd->add_option("--tokenizer", opts->tokenizer, "tokenizer.json (or a folder holding one)")->required();
  auto* text = cmd->add_option("--text", opts->text, "the text (with --decode: ids as 1,2,3 or [1,2,3])");
  auto* input = cmd->add_option("--input", opts->input, "a file holding the text (or the ids with --decode)");
  text->excludes(input);
  cmd->add_flag("--decode", opts->decode, "decode ids to text instead");
  cmd->add_flag("--dsv4", opts->dsv4, "load as the DeepSeek-V4 tokenizer (adds the V4 specials to a V3 file)");
  cmd->add_flag("--no-special", opts->no_added, "encode special-token text as ordinary text");
  cmd->callback([opts, text, input] {
    DSV4_CHECK_ARG(text->count() + input->count() == 1) << "tokenize: give exactly one of --text or --input";
    const std::string data = input->count() ? read_file(opts->input) : opts->text;
    std::filesystem::path path = opts->tokenizer;
    if (!opts->dsv4 && std::filesystem::is_directory(path)) path /= "tokenizer.json";
    const BpeTokenizer tok = load_tokenizer(path.string(), opts->dsv4);
    if (opts->decode) {
      std::cout << tok.decode(parse_ids(data));
      std::cout.flush();
      return;
    }
    const std::vector<TokenId> ids = tok.encode(data, !opts->no_added);
    std::cout << nlohmann::json(ids).dump() << "\n";
  });
}
DSV4_REGISTER_COMMAND(tokenize, setup_tokenize);

ThinkingMode parse_thinking(const std::string& s) {
  if (s == "none") return ThinkingMode::kNone;
  if (s == "high") return ThinkingMode::kHigh;
  if (s == "max") return ThinkingMode::kMax;
  DSV4_THROW(kInvalidArgument) << "--thinking must be none|high|max, got '" << s << "'";
}

void setup_chat_template(CLI::App& app) {
  struct Opts {
    std::string messages, thinking = "none", tokenizer;
    bool ids = false;
  };
  auto opts = std::make_shared<Opts>();
  auto* cmd = app.add_subcommand("chat-template", "Render chat messages (JSON) into the DSV4 prompt text");
  cmd->add_option("--messages", opts->messages,
                  "JSON file: a list of messages, or {\"messages\": [...], \"tools\": [...]}")->required();
  cmd->add_option("--thinking", opts->thinking, "none|high|max")->capture_default_str();
  cmd->add_option("--tokenizer", opts->tokenizer, "with --ids: the tokenizer.json (V4 specials added if missing)");
  cmd->add_flag("--ids", opts->ids, "print the token ids (JSON array) instead of the text");
  cmd->callback([opts] {
    const ChatRequest request = chat_request_from_json(read_file(opts->messages), opts->messages);
    const std::string prompt = render_chat_prompt(request, parse_thinking(opts->thinking));
    if (!opts->ids) {
      std::cout << prompt;
      std::cout.flush();
      return;
    }
    DSV4_CHECK_ARG(!opts->tokenizer.empty()) << "chat-template --ids needs --tokenizer";
    const BpeTokenizer tok = load_dsv4_tokenizer(opts->tokenizer);
    std::cout << nlohmann::json(tok.encode(prompt)).dump() << "\n";
  });
}
DSV4_REGISTER_COMMAND(chat_template, setup_chat_template);

}  // namespace
}  // namespace dsv4::cli
