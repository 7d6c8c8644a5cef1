// Subcommands of the imgfs command: each registers its options on the app
// and returns the function that runs it. No image logic lives here.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "imagecore/log.h"

namespace imgfs::cli {

using Runner = std::function<int()>;

Runner AddInfo(CLI::App& app);
Runner AddCreate(CLI::App& app);
Runner AddMount(CLI::App& app);
Runner AddUmount(CLI::App& app);
Runner AddSnapshot(CLI::App& app);
Runner AddCheck(CLI::App& app);
Runner AddResize(CLI::App& app);
Runner AddCommit(CLI::App& app);
Runner AddMap(CLI::App& app);
Runner AddRebase(CLI::App& app);
Runner AddCompare(CLI::App& app);
Runner AddConvert(CLI::App& app);
Runner AddMeasure(CLI::App& app);
Runner AddDd(CLI::App& app);
Runner AddAmend(CLI::App& app);
Runner AddBench(CLI::App& app);
Runner AddBitmap(CLI::App& app);

// Prints "imgfs: <message>" to stderr (unless said already); returns the
// exit code for it.
int Fail(const std::string& message, int code = 1);
// The CLI's log sink: warnings and errors on stderr, each once.
void SayOnce(LogLevel level, const std::string& message);

}  // namespace imgfs::cli
