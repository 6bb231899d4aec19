# Sourced by setup_env.sh and setup_compat_env.sh (needs $py: a Python with pip).
# uv does not read pip's configuration: pass_pip_index_to_uv exports pip's "index-url",
# "extra-index-url" and "find-links" (of `pip config`, PIP_* environment variables included, as
# pip itself sees them) as UV_INDEX_URL / UV_EXTRA_INDEX_URL / UV_FIND_LINKS, unless those are
# set, and pip's behaviour for several indexes (the best version across all of them).

pip_setting() {   # the environment first, then the config files (pip's precedence)
    local listed scope v
    listed=$("$py" -m pip config list 2>/dev/null) || return 0
    for scope in ':env:' install global; do
        v=$(sed -n -E "s/^$scope\.$1='(.*)'\$/\1/p" <<<"$listed" | tail -n 1)
        [[ -n $v ]] && { echo "$v"; return 0; }
    done
}

pass_on() {   # pass_on PIP_KEY UV_VAR SEPARATOR: pip's setting as UV_VAR, unless it is set
    local v
    [[ -z ${!2:-} ]] && v=$(pip_setting "$1") && [[ -n $v ]] && export "$2=${v// /$3}"
    return 0
}

pass_pip_index_to_uv() {
    pass_on index-url UV_INDEX_URL ' '
    pass_on extra-index-url UV_EXTRA_INDEX_URL ' '
    pass_on find-links UV_FIND_LINKS ,     # uv separates find-links with commas
    export UV_INDEX_STRATEGY=${UV_INDEX_STRATEGY:-unsafe-best-match}
}
