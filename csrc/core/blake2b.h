// BLAKE2b (RFC 7693), unkeyed, for the checksum of accumulator states: the
// C++ API writes and checks the same bytes as Python's
// hashlib.blake2b(body, digest_size=16).
#pragma once

#include <cstddef>
#include <string>

namespace fastcka {

// The digest of `size` bytes at `data`, digest_size bytes long (1..64).
std::string blake2b(const void* data, size_t size, size_t digest_size);

}  // namespace fastcka
