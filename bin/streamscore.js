#!/usr/bin/env node
// Runs the compiled CLI (npm run build, also run by `npm install` through "prepare").
import '../dist/cli/main.js';
