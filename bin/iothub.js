#!/usr/bin/env node
// The installed `iothub` command: runs the compiled hub (npm run build makes dist/).
import '../dist/main.js'
