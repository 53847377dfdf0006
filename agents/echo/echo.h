/*
 * agents/echo/echo.h - the built-in echo agent (see echo.c for its options).
 * Threads: both functions are pure and may be called from any thread.
 */
#ifndef HSB_AGENTS_ECHO_H
#define HSB_AGENTS_ECHO_H

#include <stdbool.h>

#include "agents/agent.h"

/* echo_agent_ops returns the echo agent's static ops table. */
const hsb_agent_ops *echo_agent_ops(void);

/* echo_agent_option_known reports whether key is one of the echo agent's options. */
bool echo_agent_option_known(const char *key);

#endif
