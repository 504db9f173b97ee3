#!/usr/bin/env bash
# Install WordNet 3.0 for nltk without nltk.download(), which needs a host this set-up cannot reach.
#
# Debian's wordnet-base package ships the WordNet 3.0 database in /usr/share/wordnet, and
# wordnet-sense-index adds index.sense. nltk 3.10 reads them from $NLTK_DATA/corpora/wordnet and raises
# a "Security Violation" for a symbolic link whose target lies outside that folder, so this script
# copies the files.
# Debian leaves out the lexnames file that nltk opens first, so the script writes it from the list of
# the 45 lexicographer files that WordNet 3.0 documents in lexnames(5WN).
#
# Usage: scripts/setup_wordnet.sh   (as root when the Debian packages are not installed yet)
# Environment: NLTK_DATA (default $HOME/nltk_data), PYTHON (default python3; the Python that has
# nltk, used for the final check), WORDNET_DICT_DIR (default /usr/share/wordnet).
set -euo pipefail

dict_dir="${WORDNET_DICT_DIR:-/usr/share/wordnet}"
target="${NLTK_DATA:-$HOME/nltk_data}/corpora/wordnet"
python="${PYTHON:-python3}"

# Files nltk's WordNetCorpusReader opens (its _FILES tuple), except lexnames, which is written below.
files=(
    cntlist.rev index.sense
    index.adj index.adv index.noun index.verb
    data.adj data.adv data.noun data.verb
    adj.exc adv.exc noun.exc verb.exc
)

missing=()
for name in "${files[@]}"; do
    [[ -f "$dict_dir/$name" ]] || missing+=("$name")
done

if ((${#missing[@]} > 0)); then
    echo "setup_wordnet: $dict_dir lacks ${missing[*]}; installing wordnet-base and wordnet-sense-index"
    if [[ "$(id -u)" != 0 ]]; then
        echo "setup_wordnet: error: installing the Debian packages needs root:" \
            "run \`sudo apt-get install -y wordnet-base wordnet-sense-index\` and rerun this script" >&2
        exit 1
    fi
    apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index ||
        { apt-get update && apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index; }
fi

mkdir -p "$target"
for name in "${files[@]}"; do
    # --dereference copies the file behind a link, because nltk rejects links out of its data folder.
    cp --dereference "$dict_dir/$name" "$target/$name"
done

# Lexicographer file names in WordNet 3.0 order: the line number is the lex_filenum that every synset
# in data.* stores, and the last column is the part of speech (1 noun, 2 verb, 3 adjective, 4 adverb).
lexnames=(
    adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute
    noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group
    noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant
    noun.possession noun.process noun.quantity noun.relation noun.shape noun.state
    noun.substance noun.time verb.body verb.change verb.cognition verb.communication
    verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion
    verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl
)
: >"$target/lexnames"
for index in "${!lexnames[@]}"; do
    name="${lexnames[$index]}"
    case "$name" in
        noun.*) category=1 ;;
        verb.*) category=2 ;;
        adj.*) category=3 ;;
        adv.*) category=4 ;;
    esac
    printf '%02d\t%s\t%d\n' "$index" "$name" "$category" >>"$target/lexnames"
done

# Check the copy through nltk itself, including lexnames against synsets whose file is known.
NLTK_DATA="${NLTK_DATA:-$HOME/nltk_data}" "$python" - <<'PYTHON'
from nltk.corpus import wordnet

synsets = wordnet.synsets("dog")
assert synsets, "nltk found no synsets for 'dog'"
assert wordnet.synset("dog.n.01").lexname() == "noun.animal", wordnet.synset("dog.n.01").lexname()
assert wordnet.synset("run.v.01").lexname() == "verb.motion", wordnet.synset("run.v.01").lexname()
assert wordnet.synset("lung.n.01").lexname() == "noun.body", wordnet.synset("lung.n.01").lexname()

# A shifted lexnames list would give some synsets a lexicographer file of another part of speech.
prefixes = {"n": "noun.", "v": "verb.", "a": "adj.", "s": "adj.", "r": "adv."}
mismatched = [s.name() for s in wordnet.all_synsets() if not s.lexname().startswith(prefixes[s.pos()])]
assert not mismatched, f"lexnames does not match the data files, for example {mismatched[:3]}"
print(f"setup_wordnet: nltk reads WordNet {wordnet.get_version()} ({len(synsets)} synsets for 'dog')")
PYTHON
echo "setup_wordnet: WordNet is in $target"
