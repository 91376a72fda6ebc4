// The report's KV budget plan section (kvfold report --budget): the plan per budget and every
// candidate's KL against its KV bytes, the frontier marked.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace kvfold {

// `plan` is PlanJson's object (converter/plan/planner.h).
std::string PlanSection(const nlohmann::ordered_json& plan);

}  // namespace kvfold
