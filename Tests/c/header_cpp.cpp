// The header compiles as C++ (-Wall -Wextra -pedantic -Werror) and its declarations link.
#include "dpo.h"

#include <cstdio>

int main() {
    dpo_model_config config;
    config.struct_size = sizeof config;
    dpo_status s = dpo_model_default_config(&config);
    std::printf("C++: %s, abi %d, default vocab_size %lld\n", dpo_status_string(s), static_cast<int>(dpo_abi_version()),
                static_cast<long long>(config.vocab_size));
    return s == DPO_OK && dpo_abi_version() == DPO_ABI_VERSION ? 0 : 1;
}
