// libFuzzer target: config.json parsing either succeeds with a consistent config or raises
// kvfold::Error; a JSON library exception escaping means a field was read without checking.
#include <cstdint>
#include <string_view>

#include "formats/error.h"
#include "formats/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const kvfold::ModelConfig c = kvfold::ParseModelConfig(text, "fuzz");
    if (c.num_attention_heads % c.num_key_value_heads != 0 || c.head_dim % 2 != 0) __builtin_trap();
  } catch (const kvfold::Error&) {
  }
  return 0;
}
