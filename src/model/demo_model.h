// The embedded default checkpoint: `mkmodel --preset tiny --seed 0` with the real tokenizer, written once into
// the cache folder and reused, so that commands run before any real model is given.
#pragma once
#include <string>

namespace mxs {

// Returns the folder of the demo checkpoint (cache_dir()/models/demo-tiny-seed0-gN), writing it on first use
// (into a temporary folder renamed into place, so concurrent or interrupted runs never see half a model).
// Throws mxs::Error when no tokenizer.json is available (run scripts/fetch-tokenizer.sh).
std::string ensure_demo_model();

}  // namespace mxs
