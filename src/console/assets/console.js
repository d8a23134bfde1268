// Small progressive enhancements for the console; every page works without this file.
// Pages add their own behaviour below, each keyed by a data- attribute.
