#!/usr/bin/env bash
# The template's checks, as `make validate` and CI run them:
#   1. cfn-lint with the serverless rules (cfn-lint-serverless) - nothing reported;
#   2. checkov - no failed check (each skip carries its reason in the resource's Metadata);
#   3. sam validate --lint;
#   4. sam build, when a Python 3.13 interpreter is present (tests/unit/test_template.py then inspects
#      the built layer); skipped with a message when none is.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
TOOLS=${TOOLS:-.venv-tools}
# sam validate needs a region to translate the template; it calls no AWS API.
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}

started=$SECONDS
step() {
    printf '\n==> %s\n' "$1"
    step_started=$SECONDS
}
done_in() { printf '    ok (%ss)\n' $((SECONDS - step_started)); }

step "cfn-lint template.yaml -a cfn_lint_serverless.rules"
"$VENV/bin/cfn-lint" template.yaml -a cfn_lint_serverless.rules
done_in

step "checkov -f template.yaml --framework cloudformation"
# --skip-download: no call to the vendor's platform; the checks themselves are all local.
"$TOOLS/checkov/bin/checkov" -f template.yaml --framework cloudformation --compact --quiet --skip-download
done_in

step "sam validate --lint"
scripts/sam.sh validate --lint --region "$REGION"
done_in

step "sam build"
if python313=$(scripts/sam.sh --find-python); then
    echo "    with $python313"
    scripts/sam.sh build --cached --parallel
    done_in
else
    echo "    SKIPPED: no Python 3.13 interpreter found (python3.13 on PATH, pyenv, /usr/local/bin)."
    echo "    sam build needs the Lambda runtime's Python; install 3.13 to build and check the layer."
fi

printf '\nTemplate checks passed in %ss.\n' $((SECONDS - started))
