#!/usr/bin/env node
/** The `glm4-int4` bin (package.json "bin" -> dist/cli.js): the commands are in lib/cli/ (dispatcher: main.ts). */
import "./cli/main.js";
