#!/usr/bin/env python3
"""Deterministic generator of the bundled sample corpus.

Writes ``examples/sample.jsonl`` (Alpaca-style ``{"instruction", "input", "output"}`` records, one per
line) and ``examples/sample_manifest.json`` (exactly what was planted in it).  Pure standard library,
seeded: running it again rewrites byte-identical files.

    python examples/make_sample.py [--out-dir DIR]

What the file holds:

* ``N_BASE`` unique, varied instructions over twelve task types (open QA, closed QA over a passage,
  summarization, extraction, classification, brainstorming, creative writing, rewriting, coding,
  math, translation, data formatting), from one-word questions to multi-sentence instructions with
  detailed constraints.  No two of them share a dedup key, and no two are near duplicates (their
  word 5-gram Jaccard similarity stays below ``BASE_MAX_JACCARD``).
* ``N_EXACT`` exact duplicates: an earlier record whose instruction/input only differ in case,
  whitespace and punctuation, so that they share the original's dedup key.
* ``N_NEAR`` near duplicates: an earlier, long record with one to three words substituted, inserted
  or deleted (word 5-gram Jaccard >= ``NEAR_MIN_JACCARD``, different dedup key).
* bad lines: malformed JSON, non-object JSON values, empty instructions, invalid UTF-8, a record
  without an instruction field, and one line of about 1 MB (quarantined as too_long).

Planted rows are interleaved with the normal ones.  Line numbers in the manifest are 0-based.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import re
import unicodedata
from pathlib import Path

SEED = 20240617
N_BASE = 3100
N_EXACT = 150
N_NEAR = 150
TOO_LONG_CHARS = 1_000_000
SHINGLE_WORDS = 5
CHAR_SHINGLE = 5
# Similarity is measured on two renderings of a record ("plain": norm(instruction) + " " + norm(input);
# "template": norm() of the paper's prompt template) with word 5-gram and char 5-gram shingles.
NEAR_MIN_JACCARD = 0.9  # each planted near duplicate: word 5-gram Jaccard to its original, both renderings
NEAR_MIN_WORDS = 40  # ... and its original has at least this many words (instruction + input)
BASE_MAX_WORD_JACCARD = 0.5  # no two other records are this similar with word 5-grams
BASE_MAX_CHAR_JACCARD = 0.7  # ... nor with char 5-grams
TEMPLATE = "### Instruction: {instruction}\n\n### Input: {input}\n\n### Response:"
TEMPLATE_NO_INPUT = "### Instruction: {instruction}\n\n### Response:"
MAX_REST_BYTES = 950_000  # everything but the ~1 MB line
HERE = Path(__file__).resolve().parent

TASK_TYPES = (
    "open_qa",
    "closed_qa",
    "summarization",
    "extraction",
    "classification",
    "brainstorming",
    "creative_writing",
    "rewriting",
    "coding",
    "math",
    "translation",
    "data_formatting",
)
TASK_WEIGHTS = (14, 9, 8, 7, 10, 8, 9, 7, 10, 9, 5, 4)


# --------------------------------------------------------------------------------------------
# the dedup rule (the same as the pipeline's)


class _DropPS(dict):
    """str.translate table: None for every punctuation (P*) or symbol (S*) character (lazily)."""

    def __missing__(self, cp: int):
        v = None if unicodedata.category(chr(cp))[0] in "PS" else cp
        self[cp] = v
        return v


_DROP_PS = _DropPS()


def normalize(s: str) -> str:
    """NFKC, casefold, drop punctuation and symbols (Unicode categories P*, S*), collapse whitespace."""
    s = unicodedata.normalize("NFKC", s).casefold().translate(_DROP_PS)
    return " ".join(s.split())


def dedup_key(instruction: str, input_: str) -> str:
    return normalize(instruction) + "\n" + normalize(input_)


def renderings(instruction: str, input_: str) -> tuple[str, str]:
    """The two normalized texts that similarity is measured on: plain and paper-template."""
    plain = (normalize(instruction) + " " + normalize(input_)).strip()
    t = TEMPLATE.format(instruction=instruction, input=input_) if input_ else TEMPLATE_NO_INPUT.format(instruction=instruction)
    return plain, normalize(t)


def word_set(text: str, n: int = SHINGLE_WORDS) -> set:
    w = text.split()
    if len(w) <= n:
        return {" ".join(w)}
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


def char_set(text: str, n: int = CHAR_SHINGLE) -> set:
    if len(text) <= n:
        return {text}
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def shingle_sets(instruction: str, input_: str) -> dict[str, set]:
    plain, templ = renderings(instruction, input_)
    return {"word_plain": word_set(plain), "word_template": word_set(templ),
            "char_plain": char_set(plain), "char_template": char_set(templ)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def similar_pairs(sets: list[set], t: float, start: int = 0) -> list[tuple[int, int, float]]:
    """Every pair (i, j), i < j, j >= start, with Jaccard >= t: exact (PPJoin).

    Tokens are ordered rarest first (ties by value) and sets are visited from the smallest up; a set
    probes the index with its first ``|s| - ceil(t |s|) + 1`` tokens and is indexed by its first
    ``|s| - ceil(2t/(1+t) |s|) + 1``: two sets with Jaccard >= t always meet that way.  Size and
    positional filters prune candidates, and every remaining candidate is verified exactly.
    """
    freq: dict = {}
    for st in sets:
        for x in st:
            freq[x] = freq.get(x, 0) + 1
    rank = {x: r for r, x in enumerate(sorted(freq, key=lambda x: (freq[x], x)))}
    ranked = [sorted(map(rank.__getitem__, st)) for st in sets]
    as_sets = [frozenset(r) for r in ranked]
    index: dict[int, list[tuple[int, int]]] = {}
    out = []
    eps = 1e-9
    for j in sorted(range(len(sets)), key=lambda k: (len(ranked[k]), k)):
        toks = ranked[j]
        nj = len(toks)
        overlap: dict[int, int] = {}
        old = j < start
        for pj in range(nj - math.ceil(t * nj - eps) + 1):
            for i, pi in index.get(toks[pj], ()):
                if old and i < start:
                    continue
                c = overlap.get(i, 0)
                if c < 0:
                    continue
                ni = len(ranked[i])
                if ni < t * nj - eps or c + 1 + min(ni - pi - 1, nj - pj - 1) < math.ceil(t / (1 + t) * (ni + nj) - eps):
                    overlap[i] = -1
                else:
                    overlap[i] = c + 1
        for i, c in overlap.items():
            if c > 0:
                jac = jaccard(as_sets[i], as_sets[j])
                if jac >= t:
                    out.append((min(i, j), max(i, j), jac))
        for pj in range(nj - math.ceil(2 * t / (1 + t) * nj - eps) + 1):
            index.setdefault(toks[pj], []).append((j, pj))
    return sorted(out)


# --------------------------------------------------------------------------------------------
# vocabularies

FIRST = (
    "Amara Ben Carla Dmitri Elena Farid Grace Hiro Ines Jonas Kavya Liam Mei Nadia Omar Priya "
    "Quentin Rosa Samuel Tanvi Umar Valeria Wen Xavier Yara Zoltan Aisha Bruno Chloe Diego Emeka "
    "Freya Gustavo Hana Ivan Julia Kofi Lucia Mateo Noor Olga Pablo Ravi Sofia Tomas Ulla Victor"
).split()
LAST = (
    "Okafor Lindqvist Moreau Petrov Tanaka Haddad Novak Silva Kowalski Nguyen Fischer Mensah "
    "Rossi Kaur Alvarez Brennan Castillo Dubois Eriksen Fontaine Garcia Hoffmann Iyer Jensen "
    "Kimura Larsen Mahmoud Nakamura O'Neill Park Quinn Reyes Schmidt Torres Ueda Vargas Weber "
    "Yilmaz Zhang Abara Becker Chowdhury"
).split()
CITIES = (
    "Lisbon|Nairobi|Osaka|Toronto|Krakow|Porto Alegre|Melbourne|Rotterdam|Hyderabad|Valencia|"
    "Denver|Tallinn|Accra|Montreal|Edinburgh|Busan|Lyon|Austin|Cape Town|Bologna|Gothenburg|"
    "Pittsburgh|Kyoto|Leeds|Seville|Manila|Bilbao|Auckland|Guadalajara|Ljubljana|Wellington|"
    "Minneapolis|Hamburg|Dublin|Santiago|Tbilisi|Marseille|Chennai|Bergen|Quebec City"
).split("|")
COUNTRY_CAPITALS = (
    "France:Paris Japan:Tokyo Kenya:Nairobi Canada:Ottawa Brazil:Brasília Australia:Canberra "
    "Norway:Oslo Egypt:Cairo Peru:Lima Vietnam:Hanoi Poland:Warsaw Ghana:Accra Chile:Santiago "
    "Portugal:Lisbon Turkey:Ankara Morocco:Rabat Finland:Helsinki Argentina:Buenos_Aires "
    "Thailand:Bangkok Hungary:Budapest Colombia:Bogotá Nigeria:Abuja Ireland:Dublin "
    "Switzerland:Bern Indonesia:Jakarta Mongolia:Ulaanbaatar Iceland:Reykjavík Ethiopia:Addis_Ababa "
    "Pakistan:Islamabad Greece:Athens Cuba:Havana Nepal:Kathmandu Austria:Vienna Uruguay:Montevideo"
).split()
COUNTRY_CAPITALS = [tuple(x.replace("_", " ").split(":")) for x in COUNTRY_CAPITALS]
CO_PREFIX = (
    "Northwind Bluepeak Helix Orchard Quantix Redstone Silverline Tidewater Brightpath Corelink "
    "Evergreen Ironbridge Lumen Meridian Novacrest Pinebrook Solace Vantage Wavelength Zephyr "
    "Arclight Cobalt Driftwood Foxglove Granite Harbor Juniper Kestrel"
).split()
CO_SUFFIX = {
    "Labs": "biotechnology",
    "Systems": "software",
    "Foods": "food processing",
    "Logistics": "logistics",
    "Energy": "renewable energy",
    "Health": "healthcare",
    "Robotics": "robotics",
    "Analytics": "data analytics",
    "Textiles": "textile",
    "Motors": "electric vehicle",
    "Media": "digital media",
    "Bank": "banking",
}
PRODUCTS = (
    "cloud storage|electric scooter|plant-based snack|wearable sensor|payroll software|solar inverter|"
    "smart thermostat|diagnostic kit|delivery drone|noise-cancelling headphone|home battery|"
    "fraud detection|oat milk|warehouse robot|telehealth|e-bike|3D printer|water filter"
).split("|")
TECH = (
    "battery recycling technology|a shared logistics platform|AI-assisted radiology tools|"
    "low-carbon cement|a payments app for small farmers|autonomous forklifts|"
    "a regional hydrogen network|privacy-preserving analytics|vertical farming systems|"
    "recyclable packaging|satellite-based crop monitoring|a rural broadband service"
).split("|")
MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
QUARTERS = ("first", "second", "third", "fourth")
JOURNALS = ("Nature Ecology", "The Lancet", "Cell Reports", "Science Advances", "PLOS ONE",
            "the Journal of Applied Psychology", "Physical Review Letters", "Marine Biology")
ORGANISMS = ("honeybees", "zebrafish", "octopuses", "tomato plants", "house sparrows", "earthworms",
             "gut bacteria", "coral polyps", "fruit flies", "crows", "moss", "sea otters",
             "wheat seedlings", "bats", "lichens", "salmon")
ABILITIES = ("recognize individual faces", "tolerate much higher temperatures",
             "recover from damage twice as fast", "change their feeding patterns",
             "communicate using low-frequency sounds", "store more carbon",
             "navigate without visual cues", "resist a common fungal infection",
             "learn simple tasks by watching others", "survive long periods without water")
CONDITIONS = ("mild heat stress", "artificial light at night", "microplastics", "low oxygen levels",
              "traffic noise", "higher salinity", "a diet rich in sugar", "repeated drought",
              "cold winters", "elevated carbon dioxide")
PROFESSIONS = ("architect", "nurse", "civil engineer", "botanist", "journalist", "violinist",
               "chemist", "schoolteacher", "cartographer", "photographer", "economist", "potter")
WORKS = ("public housing projects", "a field guide to alpine flowers", "water purification methods",
         "a series of documentary photographs", "early computer typesetting", "children's radio plays",
         "a new method for dating ancient pottery", "maps of the northern coastline",
         "affordable prosthetic limbs", "a history of the local textile trade")
AWARDS = ("National Design Prize", "Royal Medal", "Golden Lens Award", "Order of Merit",
          "Pioneer in Science Award", "Civic Leadership Medal", "Harmon Book Prize")
SPORT_TEAMS = ("Riverside Rovers", "Northgate United", "Harbor City FC", "Eastfield Eagles",
               "Lakeside Lions", "Westbrook Wanderers", "Redhill Rangers", "Southport Sharks",
               "Cedar Valley Comets", "Ironworks Athletic")
VENUES = ("Mill Lane Stadium", "the Harbor Arena", "Victoria Park", "the Old Quarry Ground",
          "Kingsway Stadium", "the Riverside Dome")
DISHES = ("grilled sardines", "spiced lentil stew", "fresh dumplings", "seafood rice",
          "smoked trout on rye", "slow-cooked lamb", "cheese pastries", "street tacos",
          "sticky rice with mango", "pickled herring")
ATTRACTIONS = ("its tiled old town", "a lively waterfront market", "a hilltop castle",
               "street art and live music", "botanical gardens", "a busy harbour and fish market",
               "mountain hiking trails", "its art museums", "a centuries-old university",
               "sandy beaches within a short tram ride")
TRANSPORT = ("trams and a small metro", "buses and bike-share", "ferries and trams",
             "a commuter rail line", "an extensive bus network")
ACTIVITIES = ("brisk walking", "swimming", "strength training", "cycling", "yoga",
              "dancing", "gardening", "stair climbing")
HEALTH_CONDITIONS = ("type 2 diabetes", "high blood pressure", "heart disease", "depression",
                     "osteoporosis", "lower back pain", "sleep problems")
MEDS = ("ibuprofen", "the allergy tablet", "this antibiotic", "the iron supplement",
        "the cough syrup")
SIDE_EFFECTS = ("drowsiness", "mild headache", "nausea", "dry mouth", "stomach upset",
                "dizziness", "a skin rash")
DEPTS = ("Human Resources", "the IT service desk", "Facilities", "the Finance team",
         "your line manager", "the Legal department")
PROJECTS = ("the website redesign", "the Q3 marketing campaign", "the warehouse move",
            "the customer survey", "the data migration", "the annual conference",
            "the new onboarding program", "the mobile app launch")
INGREDIENTS = ("flour", "sugar", "butter", "eggs", "grated carrot", "ground almonds", "oats",
               "chopped onion", "garlic", "diced tomatoes", "coconut milk", "red lentils",
               "spinach", "lemon zest", "honey", "yogurt")

CONCEPTS = {
    # concept: one-line answer
    "photosynthesis": "the process by which plants use sunlight, water and carbon dioxide to make sugar and oxygen",
    "inflation": "a general rise in prices that reduces the purchasing power of money over time",
    "machine learning": "a field of computing where systems learn patterns from data instead of following fixed rules",
    "the water cycle": "the continuous movement of water through evaporation, condensation, precipitation and runoff",
    "compound interest": "interest earned on both the original amount and on previously earned interest",
    "plate tectonics": "the theory that Earth's outer shell is split into moving plates",
    "the immune system": "the network of cells and organs that defends the body against infection",
    "blockchain": "a shared, append-only ledger whose records are linked with cryptographic hashes",
    "opportunity cost": "the value of the best alternative you give up when making a choice",
    "natural selection": "the process by which traits that help survival and reproduction become more common",
    "a black hole": "a region of space where gravity is so strong that not even light can escape",
    "the greenhouse effect": "the warming of a planet when gases in its atmosphere trap outgoing heat",
    "supply and demand": "the model in which prices settle where the quantity offered equals the quantity wanted",
    "an API": "a defined interface that lets one piece of software request services from another",
    "cognitive dissonance": "the discomfort felt when holding two conflicting beliefs or acting against one's values",
    "the Renaissance": "a period of European cultural revival between the 14th and 17th centuries",
    "DNA replication": "the process by which a cell copies its DNA before dividing",
    "a neural network": "a model made of layers of connected units whose weights are learned from data",
    "the placebo effect": "a real improvement in symptoms caused by a patient's expectations rather than the treatment",
    "encryption": "turning readable data into ciphertext so that only holders of a key can read it",
    "quantum entanglement": "a link between particles so that measuring one instantly constrains the other",
    "the scientific method": "a cycle of observation, hypothesis, experiment and revision",
    "a recession": "a significant decline in economic activity lasting more than a few months",
    "biodiversity": "the variety of life in a place, from genes to species to ecosystems",
    "the Industrial Revolution": "the shift to machine-based manufacturing that began in Britain around 1760",
    "a stock index": "a number that tracks the combined price movement of a group of shares",
    "herd immunity": "indirect protection that arises when enough of a population is immune to a disease",
    "recursion": "a technique where a function solves a problem by calling itself on smaller inputs",
    "the Doppler effect": "the change in frequency of a wave for an observer moving relative to its source",
    "a carbon footprint": "the total greenhouse gas emissions caused by a person, product or organisation",
    "impressionism": "a 19th-century art movement focused on light, color and everyday scenes",
    "the electoral college": "the body of electors that formally chooses the US president",
    "entropy": "a measure of disorder, or of the number of ways a system can be arranged",
    "gerrymandering": "drawing electoral boundaries to favor one party or group",
    "a vaccine": "a preparation that trains the immune system to recognise a pathogen",
    "the French Revolution": "the 1789-1799 upheaval that ended absolute monarchy in France",
    "a mortgage": "a loan used to buy property, secured against that property",
    "cloud computing": "renting computing power and storage over the internet instead of owning servers",
    "the circadian rhythm": "the body's roughly 24-hour internal clock",
    "a haiku": "a short Japanese poem of three lines, traditionally 5, 7 and 5 syllables",
    "the Pythagorean theorem": "in a right triangle, the square of the hypotenuse equals the sum of the squares of the other sides",
    "an index fund": "a fund that tracks a market index instead of picking individual stocks",
    "gentrification": "the changing of a neighbourhood as wealthier residents move in and prices rise",
    "the Cold War": "the geopolitical rivalry between the US and the Soviet Union from 1947 to 1991",
    "a solar eclipse": "the moment when the Moon passes between the Sun and Earth and blocks sunlight",
    "the Turing test": "a test of whether a machine's conversation is indistinguishable from a human's",
    "a food chain": "the sequence of who eats whom in an ecosystem",
    "osmosis": "the movement of water across a membrane from low to high solute concentration",
    "version control": "a system that records changes to files so you can compare and restore versions",
    "the Big Bang": "the theory that the universe expanded from an extremely hot, dense state about 13.8 billion years ago",
    "a budget deficit": "the amount by which a government's spending exceeds its revenue in a year",
    "mindfulness": "the practice of paying attention to the present moment without judgment",
    "a hash table": "a data structure that maps keys to values using a hash function for fast lookup",
    "the Silk Road": "a network of trade routes linking China with the Mediterranean",
    "continental drift": "the slow movement of continents across Earth's surface",
    "a watershed": "an area of land that drains into a particular river, lake or sea",
    "the gig economy": "a labour market of short-term, freelance and app-based jobs",
    "antibiotic resistance": "the ability of bacteria to survive drugs that once killed them",
    "a sonnet": "a 14-line poem with a set rhyme scheme",
    "the Magna Carta": "the 1215 English charter that limited the king's power",
    "dark matter": "invisible matter inferred from its gravitational effects on galaxies",
    "a credit score": "a number that summarises how reliably a person has repaid debt",
    "the Fibonacci sequence": "a sequence where each number is the sum of the two before it",
    "an ecosystem": "a community of organisms interacting with each other and their environment",
    "public key cryptography": "encryption using a public key to encrypt and a private key to decrypt",
    "the Krebs cycle": "a series of reactions in cells that releases energy from nutrients",
    "a tariff": "a tax on imported goods",
    "the Enlightenment": "an 18th-century intellectual movement emphasising reason and individual rights",
    "a microservice architecture": "building an application as small, independently deployable services",
    "a tsunami": "a series of large ocean waves usually caused by an undersea earthquake",
    "stoicism": "an ancient philosophy teaching that virtue and self-control lead to a good life",
    "the butterfly effect": "the idea that small changes in initial conditions can have large effects",
    "photosynthetic algae": "algae that produce oxygen and sugars from sunlight",
    "a limited liability company": "a business structure that protects owners' personal assets from company debts",
    "the ozone layer": "a layer of the stratosphere that absorbs most of the Sun's ultraviolet radiation",
    "a SQL join": "a query operation that combines rows from two tables based on related columns",
    "game theory": "the study of strategic decision-making among interacting players",
    "the Roman Republic": "the period of Roman government by elected magistrates from 509 to 27 BC",
    "an aurora": "a natural light display caused by charged solar particles hitting the upper atmosphere",
    "universal basic income": "a regular cash payment given to every citizen without conditions",
    "a transformer model": "a neural network that uses attention to relate all parts of a sequence",
    "the business cycle": "the recurring pattern of economic expansion and contraction",
    "fermentation": "the breakdown of sugars by microbes without oxygen, producing acids, gases or alcohol",
    "a monsoon": "a seasonal wind shift that brings heavy rain",
    "the speed of light": "about 299,792 kilometres per second in a vacuum",
    "a firewall": "a system that filters network traffic according to security rules",
    "minimalism": "a style or way of living that focuses on only what is essential",
    "the nitrogen cycle": "the movement of nitrogen between air, soil, living things and water",
    "a derivative in calculus": "the rate at which a function's value changes at a point",
    "a hedge fund": "a pooled investment fund that uses varied, often risky, strategies",
    "the Mona Lisa": "a portrait painted by Leonardo da Vinci in the early 1500s",
    "a coral reef": "an underwater ecosystem built from the skeletons of coral polyps",
}
CONCEPT_PAIRS = (
    ("weather", "climate"), ("a virus", "a bacterium"), ("stocks", "bonds"),
    ("RAM", "storage"), ("a simile", "a metaphor"), ("mitosis", "meiosis"),
    ("TCP", "UDP"), ("affect", "effect"), ("speed", "velocity"), ("a crocodile", "an alligator"),
    ("empathy", "sympathy"), ("a latte", "a cappuccino"), ("socialism", "communism"),
    ("an asteroid", "a comet"), ("a debit card", "a credit card"), ("HTTP", "HTTPS"),
    ("baking soda", "baking powder"), ("a lake", "a pond"), ("a process", "a thread"),
    ("revenue", "profit"), ("a hurricane", "a typhoon"), ("Git", "GitHub"),
    ("a psychologist", "a psychiatrist"), ("an LLC", "a corporation"), ("a tortoise", "a turtle"),
    ("precision", "recall"), ("a sonnet", "a villanelle"), ("an ETF", "a mutual fund"),
    ("nuclear fission", "nuclear fusion"), ("a republic", "a democracy"),
)
FACT_QUESTIONS = (
    ("Who painted the Mona Lisa?", "Leonardo da Vinci."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen."),
    ("What is the largest planet in our solar system?", "Jupiter."),
    ("How many bones are in the adult human body?", "206."),
    ("What is the chemical symbol for gold?", "Au."),
    ("Who developed the theory of general relativity?", "Albert Einstein."),
    ("What is the longest river in Africa?", "The Nile."),
    ("In which year did the Berlin Wall fall?", "1989."),
    ("What is the boiling point of water at sea level in Fahrenheit?", "212 °F."),
    ("Which element has the atomic number 1?", "Hydrogen."),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong, in 1969."),
    ("What is the smallest prime number?", "2."),
    ("What language has the most native speakers?", "Mandarin Chinese."),
    ("Which organ produces insulin?", "The pancreas."),
    ("Who composed the 'Moonlight Sonata'?", "Ludwig van Beethoven."),
    ("What is the hardest natural substance?", "Diamond."),
    ("How many continents are there?", "Seven, by the most common convention."),
    ("What gas do plants absorb from the air?", "Carbon dioxide."),
    ("Which ocean is the deepest?", "The Pacific Ocean."),
    ("Who invented the telephone?", "Alexander Graham Bell is usually credited."),
    ("What is the tallest mountain above sea level?", "Mount Everest."),
    ("Which planet is known as the Red Planet?", "Mars."),
    ("What currency is used in Japan?", "The yen."),
    ("Who wrote 'One Hundred Years of Solitude'?", "Gabriel García Márquez."),
    ("What is the freezing point of water in Kelvin?", "273.15 K."),
    ("How many players are on a soccer team on the field?", "Eleven."),
    ("What is the main ingredient in guacamole?", "Avocado."),
    ("Which blood type is the universal donor?", "O negative."),
    ("What year did the first iPhone come out?", "2007."),
    ("Which country gifted the Statue of Liberty to the United States?", "France."),
)
UNIT_FACTS = (
    ("centimeters", "an inch", "2.54"), ("feet", "a mile", "5,280"), ("ounces", "a pound", "16"),
    ("milliliters", "a teaspoon", "about 5"), ("seconds", "a day", "86,400"),
    ("meters", "a kilometer", "1,000"), ("cups", "a quart", "4"), ("grams", "a kilogram", "1,000"),
    ("minutes", "a week", "10,080"), ("bytes", "a kilobyte", "1,024 (or 1,000 in SI units)"),
)
AUDIENCES = ("a five-year-old", "a high school student", "a software engineer", "my grandmother",
             "a busy executive", "a non-native English speaker", "a nurse", "a first-year student",
             "a skeptical investor", "a group of retirees", "a new employee", "a ten-year-old",
             "someone with no science background", "a history teacher", "a small business owner")
ROLES = ("an experienced science teacher", "a senior software engineer", "a friendly librarian",
         "a financial advisor", "a travel agent", "a professional copy editor", "a museum guide",
         "a personal trainer", "a patient tutor", "a customer support agent", "a data analyst",
         "a children's book author", "a product manager", "a chef")
GENERIC_CONSTRAINTS = (
    "Keep it under {n} words.", "Use simple language.", "Avoid jargon.",
    "Include at least one concrete example.", "Format the answer as a numbered list.",
    "Use bullet points.", "End with a one-sentence summary.", "Write in {tone} tone.",
    "Make it suitable for {aud}.", "Do not use the word '{w}'.", "Use British spelling.",
    "Mention one common misconception.", "Start with a short definition.",
    "Keep each point to a single sentence.", "Add a short title at the top.",
    "Explain your reasoning step by step.", "Use no more than {k} paragraphs.",
    "Answer in the second person.", "Include a brief analogy.", "Finish with a question for the reader.",
    "Cite no statistics you are unsure about.", "Put the most important point first.",
)
TONES = ("formal", "friendly", "humorous", "neutral", "persuasive", "enthusiastic", "academic",
         "casual", "empathetic", "matter-of-fact", "playful", "serious")
FILLER_WORDS = ("very", "really", "basically", "actually", "simply", "obviously", "just", "stuff")
LC_START = set(
    "what why how who when where which is are can does do should explain describe write give list "
    "create summarize tell name compose draft make suggest generate find classify extract translate "
    "convert rewrite solve calculate compute implement design identify sort brainstorm provide "
    "outline compare help read answer turn pull label decide determine fix refactor review add "
    "imagine come paraphrase simplify shorten edit improve format build count prove show estimate "
    "based according using from in the this".split()
)
SYNONYMS = {
    "big": "large", "large": "big", "small": "little", "quick": "fast", "fast": "quick",
    "shows": "indicates", "said": "stated", "plans": "intends", "help": "assist", "use": "utilize",
    "about": "around", "buy": "purchase", "bought": "purchased", "start": "begin", "begin": "start",
    "important": "significant", "main": "primary", "strong": "robust", "new": "fresh",
    "rose": "climbed", "fell": "dropped", "found": "discovered", "often": "frequently",
    "also": "additionally", "however": "but", "increase": "rise", "reduce": "lower",
    "simple": "easy", "easy": "simple", "short": "brief", "brief": "short", "write": "compose",
    "explain": "describe", "describe": "explain", "give": "provide", "list": "enumerate",
    "people": "individuals", "best": "ideal", "known": "famous", "near": "close to",
    "following": "next", "text": "passage", "passage": "text", "city": "town", "team": "group",
    "company": "firm", "firm": "company", "study": "research", "results": "findings",
    "every": "each", "each": "every", "almost": "nearly", "nearly": "almost", "good": "great",
    "great": "good", "bad": "poor", "poor": "bad", "old": "elderly", "home": "house",
}
INSERT_WORDS = ("also", "really", "very", "just", "please", "still", "actually", "quite", "now")
DELETABLE = {"the", "a", "an", "very", "also", "really", "just", "please", "that", "and", "of"}


# --------------------------------------------------------------------------------------------
# small helpers


def pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def person(rng: random.Random) -> str:
    return f"{pick(rng, FIRST)} {pick(rng, LAST)}"


def company(rng: random.Random) -> tuple[str, str]:
    suffix = pick(rng, sorted(CO_SUFFIX))
    return f"{pick(rng, CO_PREFIX)} {suffix}", CO_SUFFIX[suffix]


def lc_first(s: str) -> str:
    first = s.split(" ", 1)[0]
    if first.lower().strip(",.:;?!'\"") in LC_START and not first.isupper():
        return s[0].lower() + s[1:]
    return s


def a_an(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def strip_end(s: str) -> str:
    return s.rstrip(" .?!:")


def n_words(rng: random.Random) -> int:
    return pick(rng, (30, 50, 75, 100, 120, 150, 200, 250, 300, 400, 500))


def fill_constraint(rng: random.Random, c: str) -> str:
    tone = pick(rng, TONES)
    return c.format(n=n_words(rng), tone=f"{a_an(tone)} {tone}", aud=pick(rng, AUDIENCES),
                    w=pick(rng, ("very", "basically", "thing", "important", "really", "interesting")),
                    k=rng.randint(2, 5))


def constraints(rng: random.Random, pool=(), weights=(38, 30, 18, 10, 4)) -> list[str]:
    k = rng.choices(range(len(weights)), weights=weights)[0]
    opts = list(pool) + list(GENERIC_CONSTRAINTS)
    out: list[str] = []
    used: set[str] = set()
    while len(out) < k:
        c = pick(rng, opts)
        if c not in used:
            used.add(c)
            out.append(fill_constraint(rng, c))
    return out


def dress(rng: random.Random, core: str, kind: str | None = None, pool=(), cons_weights=(38, 30, 18, 10, 4)) -> str:
    """Phrase a core instruction in one of many styles, then append constraints.

    ``kind`` is ignored: a core ending in '?' is a question, anything else an imperative.
    """
    kind = "q" if core.endswith("?") else "imp"
    one_sentence = not re.search(r"[.?!:] [A-Z]", core)
    r = rng.random()
    wrappable = one_sentence and core.split(" ", 1)[0].lower().strip(",:") in LC_START
    if not wrappable and 0.07 <= r < 0.20:
        r = 0.25
    if r < 0.07:  # sloppy
        s = strip_end(core).lower()
        s = s.replace(" you ", " u ").replace("please", "pls")
        s += pick(rng, ("", "", " pls", " asap", "??", " thx", "...")) if kind == "imp" else pick(rng, ("", "?", "??"))
        return s
    if r < 0.20:
        if kind == "imp":
            s = pick(rng, ("Please {c}", "Could you {c}?", "Can you {c}?", "I'd like you to {c}",
                           "Would you mind helping me? {C}", "I need your help: {c}"))
        else:
            s = pick(rng, ("Quick question: {C}", "I've always wondered, {c}", "Can you tell me: {c}",
                           "Something I never understood: {c}", "{C} I'd appreciate a clear answer."))
        c = lc_first(core)
        if s.endswith("?"):
            c = strip_end(c)
        s = s.replace("{c}", c).replace("{C}", core)
        if kind == "imp" and not s.endswith(("?", ".", "!", ":")):
            s += "."
    elif r < 0.29:
        s = f"You are {pick(rng, ROLES)}. {core}"
    elif r < 0.34:
        s = pick(rng, ("I'm preparing a presentation for work. ", "This is for a school project. ",
                       "My team asked me about this today. ", "Context: I'm writing a newsletter. ",
                       "I'm new to this topic. ", "For a blog post I'm drafting: ")) + core
    else:
        s = core
    cons = constraints(rng, pool, cons_weights)
    if cons:
        if not s.endswith((".", "?", "!", ":", '"')):
            s += "."
        s = s + " " + " ".join(cons)
    return s


def maybe_output(rng: random.Random, text: str, p_empty: float = 0.06) -> str:
    return "" if rng.random() < p_empty else text


# --------------------------------------------------------------------------------------------
# passages (the `input` of closed QA, summarization, extraction, rewriting)


def _passage(rng: random.Random, first: list, rest: list, kmin: int = 1, kmax: int = 4):
    chosen = [first] + sorted(rng.sample(rest, min(len(rest), rng.randint(kmin, kmax))),
                              key=lambda x: rest.index(x))
    text = " ".join(s for s, _ in chosen)
    qa = [q for _, qs in chosen for q in qs]
    return text, qa


def p_company(rng):
    co, ind = company(rng)
    partner, _ = company(rng)
    city, ceo = pick(rng, CITIES), person(rng)
    year, q = rng.randint(2015, 2024), pick(rng, QUARTERS)
    rev, hires, pct = rng.randint(12, 980), pick(rng, (40, 75, 120, 200, 350, 500, 1200)), round(rng.uniform(1.5, 14), 1)
    product, tech, month = pick(rng, PRODUCTS), pick(rng, TECH), pick(rng, MONTHS)
    first = (f"{co}, {a_an(ind)} {ind} company based in {city}, reported revenue of ${rev} million for the {q} quarter of {year}.",
             [(f"How much revenue did {co} report?", f"${rev} million."), (f"Where is {co} based?", f"{city}.")])
    rest = [
        (pick(rng, (f"The results were driven by strong demand for its {product} products, which grew {pct} percent year over year.",
                    f"Growth slowed as demand for its {product} products cooled after a record {year - 1}.")),
         [(f"Which product line is mentioned?", f"Its {product} products.")]),
        (f"Chief executive {ceo} said the company plans to hire {hires} people by {month}.",
         [(f"Who is the chief executive of {co}?", f"{ceo}."), ("How many people does the company plan to hire?", f"{hires}.")]),
        (f"It also announced a partnership with {partner} to develop {tech}.",
         [(f"Which company did {co} partner with?", f"{partner}.")]),
        (f"Shares {pick(rng, ('rose', 'fell', 'jumped', 'slipped'))} {round(rng.uniform(0.5, 9), 1)} percent in early trading.", []),
        (f"However, rising {pick(rng, ('energy', 'shipping', 'labor', 'component', 'marketing'))} costs weighed on margins.", []),
    ]
    text, qa = _passage(rng, first, rest)
    people = [ceo] if ceo in text else []
    orgs = [co] + ([partner] if partner in text else [])
    return dict(text=text, qa=qa, people=people, orgs=orgs, places=[city], kind="news article",
                title=f"{co} posts ${rev}M {q}-quarter revenue", category="business")


def p_science(rng):
    city, org, ab, cond = pick(rng, CITIES), pick(rng, ORGANISMS), pick(rng, ABILITIES), pick(rng, CONDITIONS)
    year, n, lead, jr = rng.randint(2012, 2024), rng.randint(18, 2400), person(rng), pick(rng, JOURNALS)
    months = rng.randint(3, 36)
    first = (f"Researchers at the University of {city} have found that {org} can {ab} when exposed to {cond}.",
             [("What did the researchers find?", f"That {org} can {ab} when exposed to {cond}."),
              ("Which university did the research?", f"The University of {city}.")])
    rest = [
        (f"The study, published in {jr} in {year}, followed {n} {org} over {months} months.",
         [("Where was the study published?", f"In {jr}."), ("How long did the study last?", f"{months} months.")]),
        (f"Lead author {lead} said the findings could help explain {pick(rng, ('population declines', 'seasonal migration', 'unusual feeding behavior', 'recovery after storms', 'differences between regions'))}.",
         [("Who was the lead author?", f"{lead}.")]),
        (f"Earlier work had suggested that {cond} played only a minor role.", []),
        (f"The team now plans to test whether the effect holds {pick(rng, ('in the wild', 'in warmer climates', 'over several generations', 'in other species', 'outside the laboratory'))}.",
         [("What does the team plan to do next?", "Test whether the effect holds in other conditions.")]),
        (f"Other scientists cautioned that the sample was {pick(rng, ('small', 'drawn from a single site', 'not randomized'))} and that the results need to be replicated.", []),
    ]
    text, qa = _passage(rng, first, rest)
    return dict(text=text, qa=qa, people=[lead] if lead in text else [], orgs=[f"University of {city}"] + ([jr] if jr in text else []),
                places=[city], kind="science article", title=f"Study: {org} {ab} under {cond}", category="science")


def p_bio(rng):
    name, prof, city, city2 = person(rng), pick(rng, PROFESSIONS), pick(rng, CITIES), pick(rng, CITIES)
    she = pick(rng, ("she", "he"))
    She = she.capitalize()
    y1 = rng.randint(1880, 1975)
    y2, y3, y4 = y1 + rng.randint(20, 30), y1 + rng.randint(32, 50), y1 + rng.randint(60, 95)
    work, award = pick(rng, WORKS), pick(rng, AWARDS)
    first = (f"{name} was born in {city} in {y1} and trained as a {prof}.",
             [(f"Where was {name} born?", f"{city}."), (f"What did {name} train as?", f"A {prof}."), (f"When was {name} born?", f"{y1}.")])
    rest = [
        (f"After moving to {city2} in {y2}, {she} began working on {work}.", [(f"Where did {name} move in {y2}?", f"{city2}.")]),
        (f"{She} is best remembered for {pick(rng, ('a book on the subject', 'mentoring a generation of young colleagues', 'work that changed local building codes', 'a widely shown exhibition', 'a method still taught today'))}.", []),
        (f"In {y3}, {she} received the {award}.", [(f"Which award did {name} receive?", f"The {award}, in {y3}.")]),
        (f"{She} died in {y4}.", [(f"When did {name} die?", f"{y4}.")]),
    ]
    text, qa = _passage(rng, first, rest)
    return dict(text=text, qa=qa, people=[name], orgs=[], places=[city] + ([city2] if city2 in text else []), kind="biography",
                title=f"The life of {name}, {prof}", category="history")


def p_review(rng):
    sentiment = pick(rng, ("positive", "negative", "mixed"))
    brand, _ = company(rng)
    product = pick(rng, ("blender", "laptop", "running shoes", "vacuum cleaner", "e-reader", "tent",
                         "coffee grinder", "office chair", "phone case", "electric toothbrush", "backpack", "air fryer"))
    pos = ("works exactly as described", "is sturdy and well made", "is surprisingly quiet",
           "is easy to clean", "arrived two days early", "feels premium for the price")
    neg = ("stopped working after a month", "is much louder than expected", "feels cheap",
           "was missing a part", "is hard to set up", "scratches easily")
    when = pick(rng, ("two weeks", "a month", "three months", "half a year", "a year"))
    first = (f"I bought the {brand} {product} {when} ago.", [("How long has the reviewer owned the product?", f"{when.capitalize()}.")])
    if sentiment == "positive":
        body = [f"It {a}." for a in rng.sample(pos, 3)] + ["Customer service answered within a day.", f"I'd give it {pick(rng, ('five', 'four'))} out of five stars."]
    elif sentiment == "negative":
        body = [f"Unfortunately it {a}." for a in rng.sample(neg, 3)] + ["Customer service never replied.", f"I'd give it {pick(rng, ('one', 'two'))} out of five stars."]
    else:
        body = [f"It {rng.choice(pos)}, but it {rng.choice(neg)}.", f"The price is {pick(rng, ('fair', 'a bit high'))}.", "I'd give it three out of five stars."]
    text, qa = _passage(rng, first, [(b, []) for b in body], 1, 3)
    return dict(text=text, qa=qa, people=[], orgs=[brand], places=[], kind="product review",
                title=f"Review of the {brand} {product}", category="review", sentiment=sentiment)


def p_memo(rng):
    to, lead, lead2 = pick(rng, FIRST), person(rng), person(rng)
    proj, day, day2 = pick(rng, PROJECTS), pick(rng, WEEKDAYS[:5]), pick(rng, WEEKDAYS[:5])
    date = f"{pick(rng, MONTHS)} {rng.randint(1, 28)}"
    budget = rng.randint(3, 90) * 1000
    first = (f"Hi {to}, thanks for joining the planning meeting for {proj} on {day}.",
             [("What project was the meeting about?", f"{proj.capitalize()}.")])
    rest = [
        (f"As agreed, {lead} will draft the timeline and share it by {date}.", [("Who will draft the timeline?", f"{lead}."), ("When is the timeline due?", f"By {date}.")]),
        (f"The budget has been set at ${budget:,}.", [("What is the budget?", f"${budget:,}.")]),
        (f"{lead2} will contact the vendors and report back.", [("Who will contact the vendors?", f"{lead2}.")]),
        (f"Please send your comments on the draft before {day2}.", [("When are comments due?", f"Before {day2}.")]),
        (f"The next meeting is on {day2} at {rng.randint(9, 16)}:{pick(rng, ('00', '30'))} in room {rng.randint(101, 540)}.", []),
    ]
    text, qa = _passage(rng, first, rest, 2, 4)
    return dict(text=text, qa=qa, people=[p for p in (lead, lead2) if p in text], orgs=[], places=[], kind="email",
                title=f"Follow-up: {proj} planning", category="workplace")


def p_travel(rng):
    city, pop = pick(rng, CITIES), f"{rng.randint(2, 95) * 10_000:,}"
    att, att2, dish, tr = pick(rng, ATTRACTIONS), pick(rng, ATTRACTIONS), pick(rng, DISHES), pick(rng, TRANSPORT)
    season = pick(rng, ("late spring", "early autumn", "midsummer", "the dry season", "September", "winter"))
    first = (f"{city} is a {pick(rng, ('lively', 'compact', 'historic', 'laid-back', 'fast-growing'))} city of about {pop} people.",
             [(f"What is the population of {city}?", f"About {pop}.")])
    rest = [
        (f"Visitors come mainly for {att}.", [("What do visitors mainly come for?", f"{att.capitalize()}.")]),
        (f"The best time to visit is {season}, when crowds are smaller.", [("When is the best time to visit?", f"{season.capitalize()}.")]),
        (f"Getting around is easy thanks to {tr}.", [("How can visitors get around?", f"By {tr}.")]),
        (f"Local restaurants are known for {dish}.", [("What food is the city known for?", f"{dish.capitalize()}.")]),
        (f"Many travelers also take a day trip to see {att2}.", []),
    ]
    text, qa = _passage(rng, first, rest)
    return dict(text=text, qa=qa, people=[], orgs=[], places=[city], kind="travel guide entry",
                title=f"Visiting {city}", category="travel")


def p_health(rng):
    act, cond, cond2 = pick(rng, ACTIVITIES), pick(rng, HEALTH_CONDITIONS), pick(rng, HEALTH_CONDITIONS)
    pct, mins = rng.randint(10, 45), pick(rng, (90, 120, 150, 180, 200))
    med, se = pick(rng, MEDS), rng.sample(SIDE_EFFECTS, 2)
    first = (f"Regular {act} can lower the risk of {cond} by up to {pct} percent.",
             [(f"By how much can {act} lower the risk of {cond}?", f"By up to {pct} percent.")])
    rest = [
        (f"Health experts recommend at least {mins} minutes of moderate activity per week.", [("How much activity is recommended?", f"At least {mins} minutes per week.")]),
        (f"People with {cond2} should talk to a doctor before starting a new routine.", [("Who should talk to a doctor first?", f"People with {cond2}.")]),
        (f"Common side effects of {med} include {se[0]} and {se[1]}.", [(f"What are the side effects of {med}?", f"{se[0].capitalize()} and {se[1]}.")]),
        (f"Stop and seek help if you feel {pick(rng, ('chest pain', 'short of breath', 'faint', 'severe pain'))}.", []),
    ]
    text, qa = _passage(rng, first, rest)
    return dict(text=text, qa=qa, people=[], orgs=[], places=[], kind="health leaflet",
                title=f"{act.capitalize()} and {cond}", category="health")


def p_sport(rng):
    a, b = rng.sample(SPORT_TEAMS, 2)
    s1, s2 = rng.randint(1, 5), rng.randint(0, 4)
    if s2 >= s1:
        s1, s2 = s2 + 1, s1
    player, keeper, venue = person(rng), person(rng), pick(rng, VENUES)
    day, crowd = pick(rng, WEEKDAYS), f"{rng.randint(8, 60) * 1000:,}"
    first = (f"{a} beat {b} {s1}-{s2} on {day} night at {venue}.",
             [("Who won the match?", f"{a}."), ("What was the final score?", f"{s1}-{s2}."), ("Where was the match played?", f"At {venue}.")])
    rest = [
        (f"{player} scored {pick(rng, ('twice', 'the opening goal', 'the winner', 'a late header'))} for the home side.", [("Who scored for the winners?", f"{player}.")]),
        (f"A crowd of {crowd} watched the game.", [("How many people watched?", f"{crowd}.")]),
        (f"{b} goalkeeper {keeper} made several fine saves.", [(f"Who was the {b} goalkeeper?", f"{keeper}.")]),
        (f"The result moves {a} up to {pick(rng, ('second', 'third', 'fourth', 'first'))} place in the table.", []),
    ]
    text, qa = _passage(rng, first, rest)
    return dict(text=text, qa=qa, people=[p for p in (player, keeper) if p in text], orgs=[a, b], places=[venue], kind="match report",
                title=f"{a} {s1}-{s2} {b}", category="sports")


def p_policy(rng):
    days, notice, dept = rng.randint(2, 4), rng.randint(2, 14), pick(rng, DEPTS)
    date = f"{pick(rng, MONTHS)} {rng.randint(1, 28)}, {rng.randint(2023, 2026)}"
    region = pick(rng, ("Europe", "North America", "the Asia-Pacific offices", "all regions", "the UK"))
    first = (f"Under the new policy, employees may work remotely up to {days} days per week.",
             [("How many days per week can employees work remotely?", f"Up to {days}.")])
    rest = [
        (f"Requests must be sent to {dept} at least {notice} days in advance.", [("Where must requests be sent?", f"To {dept}."), ("How much notice is required?", f"{notice} days.")]),
        (f"The policy takes effect on {date} and applies to staff in {region}.", [("When does the policy take effect?", f"On {date}.")]),
        (f"Exceptions require written approval from {pick(rng, ('a department head', 'the regional director', 'HR'))}.", []),
        (f"Employees must be reachable during core hours, {rng.randint(9, 10)} a.m. to {rng.randint(3, 4)} p.m.", []),
    ]
    text, qa = _passage(rng, first, rest)
    return dict(text=text, qa=qa, people=[], orgs=[dept], places=[region], kind="policy notice",
                title="New remote work policy", category="workplace")


def p_recipe(rng):
    ing = rng.sample(INGREDIENTS, 4)
    temp, mins = pick(rng, (160, 170, 180, 190, 200, 220)), rng.randint(12, 55)
    dish = pick(rng, ("muffins", "a loaf", "flatbreads", "a traybake", "a casserole", "biscuits", "a crumble"))
    first = (f"Preheat the oven to {temp} degrees Celsius and line a tin with baking paper.",
             [("What temperature should the oven be?", f"{temp} °C.")])
    rest = [
        (f"Mix the {ing[0]} and {ing[1]} in a large bowl.", [("What goes in the bowl first?", f"The {ing[0]} and {ing[1]}.")]),
        (f"Stir in the {ing[2]}, then fold through the {ing[3]}.", []),
        (f"Bake for {mins} minutes, until golden.", [("How long should it bake?", f"{mins} minutes.")]),
        (f"Let it cool for {rng.randint(5, 20)} minutes before serving.", []),
    ]
    text, qa = _passage(rng, first, rest, 2, 4)
    return dict(text=text, qa=qa, people=[], orgs=[], places=[], kind="recipe", title=f"Easy {dish}",
                category="food", ingredients=ing)


PASSAGES = (p_company, p_science, p_bio, p_review, p_memo, p_travel, p_health, p_sport, p_policy, p_recipe)


def passage(rng: random.Random) -> dict:
    return pick(rng, PASSAGES)(rng)


# --------------------------------------------------------------------------------------------
# task generators: each returns (instruction, input, output)


def g_open_qa(rng):
    r = rng.random()
    if r < 0.45:
        c, d = pick(rng, sorted(CONCEPTS.items()))
        core = pick(rng, (f"What is {c}?", f"Explain {c}.", f"Explain {c} in simple terms.",
                          f"How would you describe {c} to {pick(rng, AUDIENCES)}?", f"Why does {c} matter?",
                          f"What are the most common misunderstandings about {c}?",
                          f"Describe {c} and give one real-world example.", f"Give a short history of {c}.",
                          f"What is {c} and why should I care?", f"Define {c}.",
                          f"How does {c} affect everyday life?", f"What would happen without {c}?"))
        if rng.random() < 0.05:
            return f"{c}?", "", maybe_output(rng, f"{c.capitalize()} is {d}.")
        kind = "q" if core.endswith("?") else "imp"
        return dress(rng, core, kind), "", maybe_output(rng, f"{c[0].upper() + c[1:]} is {d}.")
    if r < 0.62:
        a, b = pick(rng, CONCEPT_PAIRS)
        core = pick(rng, (f"What is the difference between {a} and {b}?", f"Compare {a} and {b}.",
                          f"How is {a} different from {b}?", f"{a.capitalize()} vs {b}: which is which?",
                          f"Explain the main differences between {a} and {b}, and when each matters."))
        return dress(rng, core, "q" if core.endswith("?") else "imp"), "", maybe_output(rng, f"{a.capitalize()} and {b} are related but differ in purpose and scope.")
    if r < 0.77:
        q, a = pick(rng, FACT_QUESTIONS)
        return dress(rng, q, "q", cons_weights=(70, 20, 8, 2, 0)), "", maybe_output(rng, a)
    if r < 0.88:
        country, cap = pick(rng, COUNTRY_CAPITALS)
        core = pick(rng, (f"What is the capital of {country}?", f"Name the capital city of {country}.",
                          f"Which city is the capital of {country}, and roughly how many people live there?",
                          f"Tell me three facts about the capital of {country}."))
        return dress(rng, core, "q" if core.endswith("?") else "imp", cons_weights=(70, 20, 8, 2, 0)), "", maybe_output(rng, f"{cap}.")
    a, b, v = pick(rng, UNIT_FACTS)
    core = pick(rng, (f"How many {a} are in {b}?", f"Convert {b} to {a}.", f"How many {a} make up {b}?"))
    return dress(rng, core, "q", cons_weights=(80, 15, 5, 0, 0)), "", maybe_output(rng, f"{v}.")


def g_closed_qa(rng):
    p = passage(rng)
    q, a = pick(rng, p["qa"])
    unanswerable = rng.random() < 0.08
    if unanswerable:
        q = pick(rng, ("Who funded the work described?", "What happened the following year?",
                       "What did critics say about it on social media?", "How much did it cost in euros?"))
        a = "The passage does not say."
    core = pick(rng, (f"Based on the passage, {lc_first(q)}", f"Read the text and answer: {q}",
                      f"{q} Answer using only the information in the {p['kind']}.",
                      f"Using the {p['kind']} below, {lc_first(q)}", q,
                      f"{q} Quote the sentence that supports your answer.",
                      f"Answer the question from the context. Question: {q}"))
    pool = ("If the answer is not in the text, say so.", "Answer in one short sentence.",
            "Do not add information that is not in the passage.", "Give just the answer, no explanation.")
    return dress(rng, core, "q" if core.endswith("?") else "imp", pool, (50, 30, 15, 5, 0)), p["text"], maybe_output(rng, a)


def g_summarization(rng):
    p = passage(rng)
    k = p["kind"]
    core = pick(rng, (f"Summarize this {k}.", f"Summarize the {k} in one sentence.",
                      f"Write a three-bullet summary of the {k} below.", f"TL;DR of this {k}?",
                      f"Give me the key points of the following {k}.", f"Condense this {k} into a headline.",
                      f"Summarize the {k} for {pick(rng, AUDIENCES)}.",
                      f"What is the main point of this {k}?", "Summarize.",
                      f"Write a summary of the {k} in under {pick(rng, (15, 20, 25, 30, 40, 50))} words.",
                      f"Read the {k} and summarize what happened, who was involved and what comes next.",
                      f"Create an executive summary of the following {k}, highlighting any numbers."))
    pool = ("Keep all numbers exactly as written.", "Do not add opinions.", "Write in the present tense.",
            "Mention every person by name.", "Start with the most important fact.")
    out = p["title"] if "headline" in core else p["text"].split(". ")[0].rstrip(".") + "."
    return dress(rng, core, "q" if core.endswith("?") else "imp", pool, (45, 30, 15, 7, 3)), p["text"], maybe_output(rng, out)


def g_extraction(rng):
    p = passage(rng)
    k = p["kind"]
    opts = []
    if p["people"]:
        opts += [(f"Extract the names of all people mentioned in the {k}.", ", ".join(p["people"])),
                 (f"List every person named in the text and their role.", "; ".join(p["people"])),
                 (f"Who is mentioned in this {k}? Return a JSON list of names.", json.dumps(p["people"], ensure_ascii=False))]
    if p["orgs"]:
        opts += [(f"Which organizations appear in the {k}?", ", ".join(p["orgs"])),
                 ("Pull out every organization name from the following text, one per line.", "\n".join(p["orgs"]))]
    if p["places"]:
        opts += [(f"Extract all place names from this {k}.", ", ".join(p["places"]))]
    if p.get("ingredients"):
        opts += [("List the ingredients used in this recipe as a JSON array.", json.dumps([i for i in p["ingredients"] if i in p["text"]]))]
    opts += [(f"Extract every number in the {k} together with what it refers to.", ""),
             (f"Extract the key facts from the {k} as a JSON object with short snake_case keys.", ""),
             (f"Find all dates and time expressions in the text.", ""),
             (f"Create a table with two columns, entity and type, for every named entity in the {k}.", ""),
             (f"Identify the main subject of the {k} and any actions that are planned.", "")]
    core, out = pick(rng, opts)
    pool = ("Return only the list, nothing else.", "Keep the original spelling.",
            "If nothing is found, return an empty list.", "Use ISO 8601 for dates.", "Do not include duplicates.")
    return dress(rng, core, "q" if core.endswith("?") else "imp", pool, (45, 30, 15, 7, 3)), p["text"], maybe_output(rng, out, 0.12)


FRUITS = ("apple", "mango", "pear", "kiwi", "plum", "fig", "papaya", "cherry", "apricot", "lychee", "grape", "banana")
VEGETABLES = ("carrot", "spinach", "leek", "broccoli", "cabbage", "radish", "celery", "kale", "beetroot", "okra", "turnip", "zucchini")
GRAINS = ("barley", "rye", "millet", "oats", "quinoa", "rice", "sorghum", "spelt", "buckwheat", "teff")
ANIMAL_CLASSES = {
    "dolphin": "mammal", "bat": "mammal", "whale": "mammal", "platypus": "mammal", "otter": "mammal", "camel": "mammal",
    "penguin": "bird", "ostrich": "bird", "owl": "bird", "kiwi bird": "bird", "heron": "bird", "parrot": "bird",
    "gecko": "reptile", "iguana": "reptile", "python": "reptile", "tortoise": "reptile", "chameleon": "reptile",
    "salamander": "amphibian", "newt": "amphibian", "tree frog": "amphibian", "axolotl": "amphibian",
    "shark": "fish", "seahorse": "fish", "eel": "fish", "tuna": "fish", "clownfish": "fish",
    "beetle": "insect", "dragonfly": "insect", "ant": "insect", "moth": "insect", "grasshopper": "insect",
}
TICKETS = (
    ("I was charged twice for my subscription this month.", "Billing"),
    ("The app crashes every time I open the settings page.", "Technical support"),
    ("My package has been stuck in transit for nine days.", "Shipping"),
    ("I can't reset my password, the email never arrives.", "Account"),
    ("Can I get a refund for the annual plan I bought yesterday?", "Billing"),
    ("The invoice shows the wrong company address.", "Billing"),
    ("Your website says in stock but checkout says unavailable.", "Technical support"),
    ("The courier left my parcel at the wrong house.", "Shipping"),
    ("Please delete my account and all my data.", "Account"),
    ("Two-factor codes stopped working after I changed phones.", "Account"),
    ("The export to CSV produces an empty file.", "Technical support"),
    ("I'd like to change the delivery date for my order.", "Shipping"),
)
EMAILS = (
    ("Congratulations! You have been selected to receive a $1,000 gift card. Click here to claim within 24 hours.", "spam"),
    ("Hi team, the quarterly review has moved to Thursday at 2 pm. Agenda attached.", "not spam"),
    ("URGENT: your account will be suspended. Verify your password at the link below.", "spam"),
    ("Reminder: your dentist appointment is tomorrow at 9:30. Reply C to confirm.", "not spam"),
    ("Earn $500 a day from home!!! No experience needed, limited spots.", "spam"),
    ("Thanks for your order #48213. It will ship within two business days.", "not spam"),
    ("Dear friend, I am a prince and need your help to transfer funds.", "spam"),
    ("Could you send me the slides from yesterday's workshop? Thanks, Mei", "not spam"),
    ("You won't believe this weight-loss trick doctors hate. Buy now, 80% off.", "spam"),
    ("The library book you reserved is ready for pickup until Friday.", "not spam"),
)
LANG_SENTENCES = (
    ("Je voudrais un café, s'il vous plaît.", "French"), ("¿Dónde está la estación de tren?", "Spanish"),
    ("Ich habe morgen keine Zeit.", "German"), ("Vorrei prenotare un tavolo per due.", "Italian"),
    ("Obrigado pela ajuda de ontem.", "Portuguese"), ("Hoe laat vertrekt de bus?", "Dutch"),
    ("Jag älskar att läsa på tåget.", "Swedish"), ("Dziękuję za zaproszenie.", "Polish"),
    ("Bugün hava çok güzel.", "Turkish"), ("Saya suka makan nasi goreng.", "Indonesian"),
    ("Tänään on kylmä päivä.", "Finnish"), ("Mi piace molto questa città.", "Italian"),
)
CITIES_OR_COUNTRIES = ("Peru", "Lagos", "Chile", "Osaka", "Norway", "Quito", "Malta", "Perth", "Laos",
                       "Bergen", "Ghana", "Lyon", "Nepal", "Porto", "Fiji", "Tbilisi", "Oman", "Cork")
COUNTRY_SET = {"Peru", "Chile", "Norway", "Malta", "Laos", "Ghana", "Nepal", "Fiji", "Oman"}


def is_prime(n: int) -> bool:
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))


def g_classification(rng):
    r = rng.random()
    if r < 0.2:
        p = p_review(rng)
        core = pick(rng, ("Classify the sentiment of this review as positive, negative or mixed.",
                          "Is the following review positive, negative or mixed?",
                          "What is the overall sentiment of this customer review?",
                          "Label this product review with one of: positive, negative, mixed.",
                          "Read the review and decide whether the customer would recommend the product."))
        return dress(rng, core, "q" if core.endswith("?") else "imp", (), (60, 30, 10, 0, 0)), p["text"], maybe_output(rng, p["sentiment"].capitalize())
    if r < 0.35:
        p = passage(rng)
        cats = "business, science, history, review, workplace, travel, health, sports, food"
        core = pick(rng, (f'Classify this headline into one of these categories: {cats}. Headline: "{p["title"]}"',
                          f'Which section of a newspaper would "{p["title"]}" belong in?',
                          f"Assign a topic label to the following text. Choose from: {cats}."))
        inp = p["text"] if "following text" in core else ""
        return dress(rng, core, "q" if core.endswith("?") else "imp", (), (70, 25, 5, 0, 0)), inp, maybe_output(rng, p["category"])
    if r < 0.5:
        items = rng.sample(FRUITS, rng.randint(1, 3)) + rng.sample(VEGETABLES, rng.randint(1, 3)) + rng.sample(GRAINS, rng.randint(0, 2))
        rng.shuffle(items)
        lab = {**{f: "fruit" for f in FRUITS}, **{v: "vegetable" for v in VEGETABLES}, **{g: "grain" for g in GRAINS}}
        core = pick(rng, (f"Classify each of these as a fruit, vegetable or grain: {', '.join(items)}.",
                          f"Which of the following are fruits? {', '.join(items)}",
                          f"Sort these foods into fruits, vegetables and grains: {', '.join(items)}"))
        return dress(rng, core, "imp", (), (75, 20, 5, 0, 0)), "", maybe_output(rng, "; ".join(f"{i}: {lab[i]}" for i in items))
    if r < 0.63:
        items = rng.sample(sorted(ANIMAL_CLASSES), rng.randint(3, 7))
        core = pick(rng, (f"Tell me whether each of these animals is a mammal, bird, reptile, amphibian, fish or insect: {', '.join(items)}.",
                          f"Group the following animals by class: {', '.join(items)}.",
                          f"Which of these are mammals: {', '.join(items)}?"))
        return dress(rng, core, "imp", (), (75, 20, 5, 0, 0)), "", maybe_output(rng, "; ".join(f"{i}: {ANIMAL_CLASSES[i]}" for i in items))
    if r < 0.73:
        t, lab = pick(rng, TICKETS)
        core = pick(rng, ("Route this support ticket to the right team: Billing, Technical support, Shipping or Account.",
                          "Which department should handle this customer message?",
                          "Classify the ticket below by department and urgency (low, medium, high)."))
        return dress(rng, core, "q" if core.endswith("?") else "imp", (), (70, 25, 5, 0, 0)), f"{t} {pick(rng, ('', 'Order ' + str(rng.randint(10000, 99999)) + '.', 'Thanks, ' + pick(rng, FIRST) + '.', 'This is the second time I am asking.'))}".strip(), maybe_output(rng, lab)
    if r < 0.82:
        t, lab = pick(rng, EMAILS)
        name = pick(rng, FIRST)
        core = pick(rng, ("Is this email spam or not spam?", "Classify the following message as spam or legitimate.",
                          "Decide if this email is a phishing attempt and explain why in one sentence."))
        return dress(rng, core, "q" if core.endswith("?") else "imp", (), (70, 25, 5, 0, 0)), f"{pick(rng, ('Hi ' + name + ',', 'Dear ' + name + ',', 'Hello,', ''))} {t}".strip(), maybe_output(rng, lab)
    if r < 0.9:
        nums = sorted(rng.sample(range(2, 400), rng.randint(4, 9)))
        core = pick(rng, (f"Which of these numbers are prime: {', '.join(map(str, nums))}?",
                          f"Classify each number as prime or composite: {', '.join(map(str, nums))}.",
                          f"Label the following as even or odd and prime or not prime: {' '.join(map(str, nums))}"))
        return dress(rng, core, "q", (), (85, 15, 0, 0, 0)), "", maybe_output(rng, ", ".join(str(n) for n in nums if is_prime(n)) or "None of them.")
    if r < 0.95:
        s, lang = pick(rng, LANG_SENTENCES)
        core = pick(rng, (f'What language is this sentence written in: "{s}"', "Identify the language of the text below.",
                          f'Detect the language: {s}'))
        inp = s if "below" in core else ""
        return dress(rng, core, "q", (), (85, 15, 0, 0, 0)), inp, maybe_output(rng, lang)
    items = rng.sample(CITIES_OR_COUNTRIES, rng.randint(4, 8))
    core = f"Tell me whether each of these is a country or a city: {', '.join(items)}."
    return dress(rng, core, "imp", (), (85, 15, 0, 0, 0)), "", maybe_output(rng, "; ".join(f"{i}: {'country' if i in COUNTRY_SET else 'city'}" for i in items))


BRAIN_TOPICS = (
    "team-building activities for a fully remote team", "names for a coffee shop next to a university",
    "ways to reduce food waste at home", "science fair projects about renewable energy",
    "blog post titles about personal finance for students", "rainy-day activities for toddlers",
    "fundraising events for a local animal shelter", "features for a habit-tracking app",
    "questions to ask in a job interview as the candidate", "gifts for a friend who loves hiking",
    "ways to make a small apartment feel bigger", "themes for a company holiday party",
    "podcast episode ideas about urban gardening", "ways to practice a new language every day",
    "slogans for a bike-to-work campaign", "low-cost marketing ideas for a bakery",
    "icebreaker questions for a workshop", "uses for old glass jars", "side projects for learning web development",
    "ways to keep a vegetable garden free of pests without chemicals", "weekend trips from {city}",
    "names for a fantasy kingdom", "YouTube video ideas for a chemistry teacher",
    "ways a library could attract more teenagers", "healthy snacks to bring to the office",
    "conversation starters for a first date", "ways to cut a household's electricity bill",
    "plot twists for a detective novel", "activities for a family reunion of thirty people",
    "topics for a TED-style talk about failure", "ways to improve morale in a hospital ward",
    "ways to celebrate a colleague's retirement", "names for a pet hedgehog",
    "community projects for a neighborhood association", "board game mechanics for a game about bees",
    "recipes that use leftover rice", "questions for a customer satisfaction survey",
    "outdoor exercises that need no equipment", "ways to make meetings shorter",
    "themes for a children's birthday party", "mobile app ideas for older adults",
    "volunteer opportunities for high school students", "ways to make a long flight more comfortable",
    "research questions about social media and sleep", "ways to welcome new students to a school",
    "Instagram captions for a travel photo in {city}", "creative ways to teach fractions",
    "hobbies that cost less than $20 to start", "strategies to stop procrastinating",
    "names for a startup that sells refurbished laptops", "themes for a photography exhibition about {city}",
    "ways to make a daily commute by train more productive", "things to do in {city} when it rains",
    "excuses a cat might give for knocking things off the table", "tips for a first marathon",
)


def g_brainstorming(rng):
    topic = pick(rng, BRAIN_TOPICS).replace("{city}", pick(rng, CITIES))
    n = pick(rng, (3, 4, 5, 5, 6, 7, 8, 10, 10, 12, 15, 20))
    core = pick(rng, (f"Give me {n} {topic}.", f"Brainstorm {topic}.", f"List {n} {topic}.",
                      f"What are some good {topic}?", f"Suggest {n} creative {topic}.",
                      f"I need {topic}. Can you come up with {n}?", f"Come up with {n} original {topic}.",
                      f"Help me brainstorm {topic}.", f"What are {n} {topic} that most people would not think of?",
                      f"{topic[0].upper() + topic[1:]}: go!"))
    pool = ("Each idea should cost less than ${m}.".replace("{m}", str(pick(rng, (10, 25, 50, 100, 500)))),
            "Avoid anything that needs special equipment.", "Include one unusual idea.",
            "Give a one-line reason for each.", "Rank them from easiest to hardest.",
            "Make them suitable for {aud}.", "Group them into categories.",
            "Focus on ideas that work in {season}.".replace("{season}", pick(rng, ("winter", "summer", "spring", "autumn"))))
    out = pick(rng, ("1. Start with a simple, cheap option. 2. Involve other people. 3. Try one unusual twist.",
                     f"Here are some {topic}: ...", ""))
    return dress(rng, core, pool=pool), "", maybe_output(rng, out)


CREATIVE_FORMS = ("poem", "haiku", "limerick", "short story", "flash fiction piece", "sonnet",
                  "set of song lyrics", "dialogue", "diary entry", "letter", "fable", "speech",
                  "opening paragraph of a novel", "bedtime story", "monologue", "product description",
                  "six-word story", "free-verse poem", "fairy tale", "ghost story")
CREATIVE_SUBJECTS = (
    "a lighthouse keeper who finds a message in a bottle", "the first snow of winter",
    "a robot learning to paint", "two strangers stuck in an elevator", "a city without electricity",
    "an old dog's last summer", "a chef who loses her sense of taste", "the moon talking to the sea",
    "a time traveler stuck in {year}", "a shy dragon", "moving to {city}", "a forgotten umbrella",
    "the last bookstore on Earth", "a grandmother's recipe box", "a job interview that goes wrong",
    "a cat who thinks it is a king", "a long train journey through the mountains", "the smell of rain",
    "a tree that has watched a village for 500 years", "an astronaut's first morning on Mars",
    "friendship between a crow and a child", "a detective who is afraid of the dark",
    "the sound of a city at 4 a.m.", "a wedding in the middle of a storm", "a lost letter from {year}",
    "a gardener and a stubborn tomato plant", "the first day at a new school", "a lonely satellite",
    "a village festival", "a small boat crossing the ocean", "the end of a long war",
    "a pair of old running shoes", "a musician who can only play one song", "autumn in {city}",
    "a librarian who can hear books whisper", "a sandcastle before the tide comes in",
    "a kitchen at midnight", "an AI that wants to become a gardener", "a thunderstorm seen from a tent",
    "the view from a hospital window", "a scientist who discovers a new color",
)


def g_creative(rng):
    form = pick(rng, CREATIVE_FORMS)
    subj = pick(rng, CREATIVE_SUBJECTS).replace("{year}", str(rng.randint(1400, 2300))).replace("{city}", pick(rng, CITIES))
    art = "an" if form[0] in "aeiou" else "a"
    core = pick(rng, (f"Write {art} {form} about {subj}.", f"Compose {art} {form} about {subj}.",
                      f"Can you write {art} {form} about {subj}?", f"Write {art} {form} inspired by {subj}.",
                      f"Create {art} {form} in which {subj} is the main character.",
                      f"I want {art} {form} about {subj}."))
    pool = ("Write it in the first person.", "Use the present tense.", "End with a twist.",
            "Include the words '{a}', '{b}' and '{c}'.".format(a=pick(rng, ("lantern", "salt", "velvet", "copper", "whistle")),
                                                           b=pick(rng, ("harbor", "ladder", "mirror", "thread", "ember")),
                                                           c=pick(rng, ("silence", "orange", "promise", "gravel", "echo"))),
            "Do not rhyme.", "Make it rhyme.", "Keep it under {n} words.", "Give it a hopeful ending.",
            "Make it suitable for children.", "Write in the style of a noir detective novel.",
            "Use at least one metaphor.", "Set it in the year {y}.".replace("{y}", str(rng.randint(1850, 2150))),
            "Give it a title.", "Tell it from the point of view of an object.", "Include a line of dialogue.")
    return dress(rng, core, "q" if core.endswith("?") else "imp", pool, (30, 30, 22, 12, 6)), "", maybe_output(rng, f"Title: {subj.capitalize()}\n...", 0.2)


ROUGH_TEXTS = (
    "hey so the meeting is moved to thursday because half the team is out, let me know if that dont work for u",
    "Our product is the best and everyone should buy it because it is really really good and cheap.",
    "The report was wrote by the team last week and it have several mistake in the numbers.",
    "I think that maybe we should perhaps consider the possibility of potentially changing the launch date.",
    "Due to the fact that the server was down, customers were unable to log in for a period of time of two hours.",
    "me and him goes to the gym every morning before work, its good for us",
    "Thank you for your email. We have received it. We will reply soon. Have a nice day.",
    "The new policy, which was announced yesterday by the board, which met on Monday, changes the rules about travel, which many employees use.",
    "Users can't login. Fix ASAP!!! This is unacceptable and we are losing money every minute.",
    "the experiment results was inconclusive, more data are needed before we can say anything for sure",
    "Please be advised that the office kitchen will be closed for cleaning purposes on the date of Friday.",
    "Its raining cats and dogs outside so the picnic are cancelled, sorry everyone",
    "We regret to inform you that your application has not been successful at this time.",
    "In my opinion I personally believe that remote work is good.",
    "The cat sat on the mat. The cat was happy. The cat liked the mat.",
    "Ur order shipped!! tracking number below, should be there in like 3-5 days or so",
)


def g_rewriting(rng):
    if rng.random() < 0.55:
        p = passage(rng)
        text = p["text"]
    else:
        text = pick(rng, ROUGH_TEXTS)
        if rng.random() < 0.5:
            text = f"{text} {pick(rng, ('Thanks.', 'Regards, ' + pick(rng, FIRST) + '.', 'Cheers!', '- ' + person(rng), 'See you ' + pick(rng, WEEKDAYS) + '.'))}"
    core = pick(rng, ("Rewrite this in a more formal tone.", "Make the following text more concise.",
                      "Fix the grammar and spelling in this text.", "Rewrite this paragraph for a ten-year-old.",
                      "Paraphrase the text without changing its meaning.", "Turn this into a tweet under 280 characters.",
                      "Rewrite the text in the passive voice where it makes sense.", "Make this sound friendlier.",
                      "Convert this text into bullet points.", "Rewrite this as a polite email to a customer.",
                      "Improve the flow of this paragraph.", "Simplify this text.", "Edit this for clarity.",
                      "Rewrite the following so it sounds more confident.", "Shorten this to one sentence.",
                      "Rewrite this in {} tone.".format((lambda t: f"{a_an(t)} {t}")(pick(rng, TONES))), "Translate this into plain English.",
                      "Rewrite this text as a news headline and a one-sentence lead."))
    pool = ("Keep the length roughly the same.", "Do not change any names or numbers.", "Use American spelling.",
            "Avoid the passive voice.", "Keep it under {n} words.", "Preserve the original meaning exactly.")
    return dress(rng, core, "imp", pool, (45, 30, 15, 7, 3)), text, maybe_output(rng, text.split(". ")[0].rstrip(".") + ".", 0.15)


LANGS = ("Python", "JavaScript", "TypeScript", "Java", "C++", "Go", "Rust", "C#", "Ruby", "Kotlin", "Bash", "PHP", "Swift")
CODE_TASKS = (
    "checks whether a string is a palindrome", "merges two sorted lists into one sorted list",
    "reads a CSV file and prints the average of the 'price' column", "implements an LRU cache",
    "returns the n-th Fibonacci number", "counts word frequencies in a text file",
    "removes duplicates from a list while keeping the order", "validates an email address",
    "converts a Roman numeral to an integer", "finds the longest common prefix of a list of strings",
    "flattens a nested list", "computes the median of a list of numbers", "reverses a linked list",
    "checks whether two strings are anagrams", "performs binary search on a sorted array",
    "parses a date string like '2024-03-15' and returns the weekday", "downloads a web page and counts its links",
    "generates a random password of a given length", "rotates a matrix 90 degrees clockwise",
    "groups a list of records by a key", "implements a simple stack with push, pop and peek",
    "finds all prime numbers below n using the Sieve of Eratosthenes", "converts Celsius to Fahrenheit",
    "checks if a binary tree is balanced", "computes the Levenshtein distance between two strings",
    "retries a function call with exponential backoff", "chunks a list into pieces of size k",
    "renames all .txt files in a folder to .md", "returns the k most frequent elements of an array",
    "implements a rate limiter that allows N calls per second", "serializes a tree to a string and back",
    "detects a cycle in a directed graph", "sums the digits of an integer", "finds the second largest number in a list",
    "transposes a matrix", "implements a thread-safe counter", "validates a Sudoku board",
    "merges overlapping intervals", "computes the factorial of n iteratively", "tokenizes an arithmetic expression",
)
CODE_CONSTRAINTS = ("Add type hints.", "Include unit tests.", "Do not use any external libraries.",
                    "Handle invalid input gracefully.", "Explain the time complexity.", "Add a docstring.",
                    "Make it run in O(n) time.", "Use recursion.", "Do not use recursion.",
                    "Write idiomatic code.", "Add comments to every non-obvious line.", "Keep it under 20 lines.",
                    "Show an example call.", "Use only the standard library.", "Make it work for very large inputs.")
SQL_TABLES = (
    ("orders(id, customer_id, total, created_at)", "customers(id, name, country)"),
    ("employees(id, name, department_id, salary, hired_on)", "departments(id, name)"),
    ("products(id, name, category, price)", "sales(id, product_id, quantity, sold_at)"),
    ("students(id, name, year)", "grades(student_id, course, score)"),
    ("rides(id, driver_id, distance_km, fare, started_at)", "drivers(id, name, city)"),
)
SQL_TASKS = ("returns the top {k} rows by total value per {g}", "counts rows per {g} for the last {d} days",
             "finds {g}s with no matching rows in the other table", "computes the average per {g} and orders it descending",
             "returns duplicates based on name", "computes a running total by date",
             "finds the row with the maximum value in each {g}")
SNIPPETS = (
    "def {f}(items):\n    total = 0\n    for i in range(1, len(items)):\n        total += items[i]\n    return total",
    "function {f}(arr) {{\n  let best = 0;\n  for (let i = 0; i < arr.length; i++) {{\n    if (arr[i] > best) best = arr[i];\n  }}\n  return best;\n}}",
    "def {f}(path):\n    f = open(path)\n    data = f.read()\n    return data.split('\\n')",
    "SELECT {c}, COUNT(*)\nFROM {t}\nWHERE created_at > '2024-01-01'\nGROUP BY {c};",
    "def {f}(d, key):\n    return d[key]",
    "for (int i = 0; i <= n; i++) {{\n    sum += values[i];\n}}",
    "def {f}(n):\n    if n == 0:\n        return 1\n    return n * {f}(n - 1)",
    "const {f} = async (url) => {{\n  const res = await fetch(url);\n  return res.json();\n}};",
    "def {f}(words):\n    result = []\n    for w in words:\n        if w not in result:\n            result.append(w)\n    return result",
    "x = input()\nif x > 10:\n    print('big')",
)
FUNC_NAMES = ("process", "compute", "helper", "get_data", "calc", "run", "handle", "load", "total", "find_max",
              "dedupe", "fact", "fetch_json", "read_lines", "lookup", "aggregate")


def g_coding(rng):
    r = rng.random()
    lang = pick(rng, LANGS)
    if r < 0.5:
        task = pick(rng, CODE_TASKS)
        core = pick(rng, (f"Write a {lang} function that {task}.", f"How do I write a function in {lang} that {task}?",
                          f"Implement a {lang} program that {task}.", f"write {lang.lower()} code that {task}",
                          f"Show me {lang} code that {task}.", f"Create a {lang} class or function that {task}, and explain how it works."))
        return dress(rng, core, "q" if core.endswith("?") else "imp", CODE_CONSTRAINTS, (30, 30, 22, 12, 6)), "", maybe_output(rng, f"```{lang.lower()}\n// {task}\n```", 0.1)
    if r < 0.65:
        t1, t2 = pick(rng, SQL_TABLES)
        g = t2.split("(")[0].rstrip("s") if rng.random() < 0.5 else t1.split("(")[0].rstrip("s")
        task = pick(rng, SQL_TASKS).format(k=rng.randint(3, 10), g=g, d=pick(rng, (7, 30, 90, 365)))
        core = f"Given the tables {t1} and {t2}, write a SQL query that {task}."
        return dress(rng, core, "imp", ("Use a CTE.", "Use window functions.", "Make it work in PostgreSQL.", "Explain each clause."), (50, 30, 15, 5, 0)), "", maybe_output(rng, "SELECT ...", 0.1)
    snippet = pick(rng, SNIPPETS).format(f=pick(rng, FUNC_NAMES), c=pick(rng, ("status", "country", "category", "user_id")),
                                         t=pick(rng, ("orders", "events", "signups", "payments")))
    core = pick(rng, ("Find the bug in this code.", "Explain what this code does.", "Refactor this code to be more readable.",
                      f"Convert this code to {lang}.", "Write unit tests for this function.", "Add error handling to this code.",
                      "Review this code and suggest improvements.", "What is the time complexity of this code?",
                      "Why does this code fail on an empty input?", "Add comments explaining each step.",
                      "Is there anything wrong with this snippet?", "Optimize this code."))
    return dress(rng, core, "q" if core.endswith("?") else "imp", CODE_CONSTRAINTS, (45, 30, 15, 7, 3)), snippet, maybe_output(rng, "The loop bounds and edge cases should be checked.", 0.1)


def g_math(rng):
    r = rng.random()
    name = pick(rng, FIRST)
    if r < 0.18:
        item = pick(rng, ("notebooks", "apples", "concert tickets", "bus passes", "plants", "cupcakes", "pencils", "T-shirts"))
        n, price, paid = rng.randint(2, 15), rng.randint(2, 40), 0
        paid = (n * price // 50 + 1) * 50
        q = f"{name} buys {n} {item} at ${price} each and pays with ${paid}. How much change does {name} get?"
        return dress(rng, q, "q", ("Show your work.", "Explain each step.", "Give only the final number."), (60, 30, 10, 0, 0)), "", maybe_output(rng, f"${paid - n * price}")
    if r < 0.32:
        a, x, b = rng.randint(2, 12), rng.randint(-15, 20), rng.randint(-30, 30)
        c = a * x + b
        eq = f"{a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}"
        core = pick(rng, (f"Solve for x: {eq}", f"What is x if {eq}?", f"Find x in the equation {eq}."))
        return dress(rng, core, "q", ("Show your work.", "Check your answer by substitution."), (60, 30, 10, 0, 0)), "", maybe_output(rng, f"x = {x}")
    if r < 0.44:
        old, pct = rng.randint(20, 900), pick(rng, (5, 10, 12, 15, 20, 25, 30, 40, 60))
        up = rng.random() < 0.5
        new = round(old * (1 + pct / 100) if up else old * (1 - pct / 100), 2)
        core = pick(rng, (f"A price goes from ${old} to ${new}. What is the percentage change?",
                          f"What is {pct}% of {old}?", f"Increase {old} by {pct}%.",
                          f"A jacket costs ${old} and is on sale for {pct}% off. What is the sale price?"))
        return dress(rng, core, "q", ("Round to two decimal places.",), (70, 30, 0, 0, 0)), "", maybe_output(rng, f"{pct}%")
    if r < 0.55:
        w, h = rng.randint(2, 60), rng.randint(2, 60)
        shape = pick(rng, ("rectangle", "rectangular garden", "room", "field", "photo frame"))
        core = pick(rng, (f"What is the area of a {shape} that is {w} m by {h} m?", f"Find the perimeter of a {shape} measuring {w} cm by {h} cm.",
                          f"A circle has a radius of {w} cm. What are its circumference and area?",
                          f"A right triangle has legs of {w} and {h}. How long is the hypotenuse?"))
        return dress(rng, core, "q", ("Show the formula you use.", "Give the answer to one decimal place."), (65, 30, 5, 0, 0)), "", maybe_output(rng, f"{w * h} square meters")
    if r < 0.64:
        bag = {"red": rng.randint(1, 9), "blue": rng.randint(1, 9), "green": rng.randint(0, 6)}
        col = pick(rng, ("red", "blue"))
        core = pick(rng, (f"A bag has {bag['red']} red, {bag['blue']} blue and {bag['green']} green marbles. What is the probability of drawing a {col} marble?",
                          f"If you roll two fair dice, what is the probability that the sum is {rng.randint(2, 12)}?",
                          f"You flip a fair coin {rng.randint(3, 10)} times. What is the probability of getting exactly {rng.randint(1, 3)} heads?"))
        return dress(rng, core, "q", ("Express it as a fraction.", "Explain your reasoning."), (60, 35, 5, 0, 0)), "", maybe_output(rng, f"{bag[col]}/{sum(bag.values())}")
    if r < 0.73:
        a, b, c = rng.randint(1, 9), rng.randint(-9, 9), rng.randint(-20, 20)
        k = rng.randint(2, 5)
        poly = f"{a}x^{k} {'+' if b >= 0 else '-'} {abs(b)}x {'+' if c >= 0 else '-'} {abs(c)}"
        core = pick(rng, (f"Differentiate f(x) = {poly}.", f"What is the derivative of {poly}?",
                          f"Find the integral of {poly} with respect to x.", f"Find the minimum of g(x) = {a}x^2 {'+' if b >= 0 else '-'} {abs(b)}x."))
        return dress(rng, core, "q", ("Show each step.",), (70, 30, 0, 0, 0)), "", maybe_output(rng, f"{a * k}x^{k - 1} + {b}")
    if r < 0.81:
        a, b = rng.randint(6, 300), rng.randint(6, 300)
        import math as _m
        core = pick(rng, (f"What is the greatest common divisor of {a} and {b}?", f"Find the least common multiple of {a} and {b}.",
                          f"Is {a * b + 1} divisible by 7?", f"What is {a} times {b}?", f"Compute {a}^2 - {b}^2."))
        return dress(rng, core, "q", (), (90, 10, 0, 0, 0)), "", maybe_output(rng, str(_m.gcd(a, b)))
    if r < 0.9:
        speed, hours = rng.randint(30, 120), rng.randint(2, 9)
        vehicle = pick(rng, ("train", "car", "bus", "cyclist", "ferry"))
        core = pick(rng, (f"A {vehicle} travels at {speed} km/h for {hours} hours. How far does it go?",
                          f"A {vehicle} covers {speed * hours} km in {hours} hours. What is its average speed?",
                          f"Two {vehicle}s leave towns {speed * hours} km apart, driving toward each other at {speed} km/h and {speed + 10} km/h. When do they meet?"))
        return dress(rng, core, "q", ("Show your work.", "Use units in every step."), (60, 35, 5, 0, 0)), "", maybe_output(rng, f"{speed * hours} km")
    nums = [rng.randint(1, 100) for _ in range(rng.randint(5, 9))]
    core = pick(rng, (f"Find the mean, median and mode of: {', '.join(map(str, nums))}.",
                      f"What is the average of {', '.join(map(str, nums))}?",
                      f"{name} scored {', '.join(map(str, nums))} on the last tests. What score is needed next time to raise the average by 5 points?"))
    return dress(rng, core, "q", ("Round to one decimal place.",), (75, 25, 0, 0, 0)), "", maybe_output(rng, f"{sum(nums) / len(nums):.1f}")


TR_SUBJECTS = ("My sister", "The old fisherman", "Our neighbors", "The teacher", "A tourist", "The children",
               "My boss", "The doctor", "Everyone in the office", "My grandfather", "The new student", "The baker")
TR_PRESENT = ("usually takes the bus to work", "is looking for a cheap hotel near the station",
              "never drinks coffee after six", "wants to learn how to swim", "likes to read the newspaper in the park",
              "is worried about the weather", "needs a new pair of glasses", "cooks dinner for the whole family",
              "walks the dog before breakfast", "is planning a trip to the mountains")
TR_PAST = ("missed the last train home", "forgot the keys at the restaurant", "found a wallet on the beach",
           "painted the kitchen yellow", "called the hotel to cancel the booking", "lost the match by one point",
           "bought fresh bread at the market", "wrote a long letter to an old friend")
TR_TIMES_PAST = ("yesterday", "last night", "this morning", "two days ago", "last summer", "on Sunday")
TR_LANGS = ("French", "Spanish", "German", "Italian", "Portuguese", "Japanese", "Dutch", "Swedish",
            "Polish", "Turkish", "Korean", "Mandarin Chinese", "Arabic", "Hindi", "Greek", "Swahili")
PHRASES = ("good morning", "where is the bathroom", "thank you very much", "how much does this cost",
           "I am allergic to peanuts", "can you help me", "the bill, please", "nice to meet you",
           "I don't understand", "what time is it", "happy birthday", "see you tomorrow")


def g_translation(rng):
    lang = pick(rng, TR_LANGS)
    r = rng.random()
    if r < 0.3:
        ph = pick(rng, PHRASES)
        core = pick(rng, (f"How do you say '{ph}' in {lang}?", f"Translate '{ph}' into {lang}.",
                          f"What's the {lang} for '{ph}'?"))
        return dress(rng, core, "q", ("Include the pronunciation.", "Give both a formal and an informal version."), (70, 30, 0, 0, 0)), "", maybe_output(rng, "")
    subj = pick(rng, TR_SUBJECTS)
    sent = f"{subj} {pick(rng, TR_PRESENT)}." if rng.random() < 0.5 else f"{subj} {pick(rng, TR_PAST)} {pick(rng, TR_TIMES_PAST)}."
    if rng.random() < 0.4:
        sent += f" {pick(rng, ('It was a strange day.', 'Nobody knows why.', 'That is typical.', 'I will tell you more later.'))}"
    if rng.random() < 0.5:
        core = pick(rng, (f"Translate the following into {lang}.", f"Translate this sentence into {lang}.",
                          f"Please translate to {lang}, keeping the tone informal."))
        return dress(rng, core, "imp", ("Keep the word order natural.", "Explain any tricky words."), (75, 25, 0, 0, 0)), sent, maybe_output(rng, "", 1.0)
    core = f'Translate "{sent}" into {lang}.'
    return dress(rng, core, "imp", (), (90, 10, 0, 0, 0)), "", ""


def g_formatting(rng):
    r = rng.random()
    people = [(person(rng), rng.randint(19, 70), pick(rng, CITIES)) for _ in range(rng.randint(3, 6))]
    if r < 0.35:
        text = "; ".join(f"{n}, {a}, {c}" for n, a, c in people)
        core = pick(rng, ("Convert this list into a JSON array of objects with the fields name, age and city.",
                          "Turn the data below into a markdown table.", "Format this as CSV with a header row.",
                          "Convert this into YAML."))
        return dress(rng, core, "imp", (), (80, 20, 0, 0, 0)), text, maybe_output(rng, json.dumps([{"name": n, "age": a, "city": c} for n, a, c in people], ensure_ascii=False))
    if r < 0.6:
        words = rng.sample(sorted(set(FRUITS + VEGETABLES + tuple(CITIES[:20]) + tuple(FIRST[:20]))), rng.randint(5, 10))
        core = pick(rng, (f"Sort these words alphabetically: {', '.join(words)}.", f"Sort these by length, shortest first: {', '.join(words)}",
                          f"Put these in reverse alphabetical order and number them: {' '.join(words)}"))
        return dress(rng, core, "imp", (), (90, 10, 0, 0, 0)), "", maybe_output(rng, ", ".join(sorted(words)))
    if r < 0.8:
        d = {"name": person(rng), "email": f"{pick(rng, FIRST).lower()}@example.com", "plan": pick(rng, ("free", "pro", "team")),
             "seats": rng.randint(1, 50)}
        core = pick(rng, ("Convert this JSON into a short English sentence.", "Turn this JSON into an HTML table.",
                          "Rewrite this JSON as key: value lines.", "Convert this JSON object to XML."))
        return dress(rng, core, "imp", (), (85, 15, 0, 0, 0)), json.dumps(d, ensure_ascii=False), maybe_output(rng, "", 0.5)
    date = f"{rng.randint(1, 28)} {pick(rng, MONTHS)} {rng.randint(1990, 2030)}"
    core = pick(rng, (f"Convert the date '{date}' into ISO 8601 format.", f"Format '{date}' as MM/DD/YYYY.",
                      f"What day of the week was {date}?"))
    return dress(rng, core, "imp", (), (95, 5, 0, 0, 0)), "", maybe_output(rng, "")


GENERATORS = {
    "open_qa": g_open_qa,
    "closed_qa": g_closed_qa,
    "summarization": g_summarization,
    "extraction": g_extraction,
    "classification": g_classification,
    "brainstorming": g_brainstorming,
    "creative_writing": g_creative,
    "rewriting": g_rewriting,
    "coding": g_coding,
    "math": g_math,
    "translation": g_translation,
    "data_formatting": g_formatting,
}


# --------------------------------------------------------------------------------------------
# the base records


SIM_LIMITS = {"word_plain": BASE_MAX_WORD_JACCARD, "word_template": BASE_MAX_WORD_JACCARD,
              "char_plain": BASE_MAX_CHAR_JACCARD, "char_template": BASE_MAX_CHAR_JACCARD}


def make_base(rng: random.Random) -> list[dict]:
    """N_BASE records, no two with the same dedup key or similar beyond SIM_LIMITS."""
    records: list[dict] = []
    keys: set[str] = set()
    names = list(TASK_TYPES)
    checked = 0  # records[:checked] are known to be pairwise far apart
    target = N_BASE + N_BASE // 12  # a surplus, so that one pass usually suffices
    while True:
        while len(records) < target:
            task = rng.choices(names, weights=TASK_WEIGHTS)[0]
            instruction, input_, output = GENERATORS[task](rng)
            k = dedup_key(instruction, input_)
            if k in keys or not normalize(instruction):
                continue
            keys.add(k)
            records.append({"instruction": instruction, "input": input_, "output": output, "task": task,
                            "key": k, "sets": shingle_sets(instruction, input_)})
        drop: set[int] = set()
        for name, t in SIM_LIMITS.items():
            drop.update(j for _, j, _ in similar_pairs([r["sets"][name] for r in records], t, checked))
        records = [r for j, r in enumerate(records) if j not in drop]
        if len(records) >= N_BASE:
            return records[:N_BASE]
        keys = {r["key"] for r in records}
        checked = len(records)


# --------------------------------------------------------------------------------------------
# planted rows


def exact_variant(rng: random.Random, text: str) -> str:
    """Same dedup key, different bytes: case, whitespace and punctuation changes only."""
    if not text:
        return text
    ops = rng.sample(("upper", "lower", "title", "swapcase_word", "spaces", "tab", "newline", "trail_punct",
                      "drop_punct", "comma", "lead_space"), rng.randint(2, 4))
    s = text
    for op in ops:
        words = s.split(" ")
        if op == "upper":
            s = s.upper()
        elif op == "lower":
            s = s.lower()
        elif op == "title":
            s = " ".join(w[:1].upper() + w[1:] for w in words)
        elif op == "swapcase_word":
            i = rng.randrange(len(words))
            words[i] = words[i].swapcase()
            s = " ".join(words)
        elif op == "spaces" and len(words) > 1:
            i = rng.randrange(1, len(words))
            s = " ".join(words[:i]) + "   " + " ".join(words[i:])
        elif op == "tab" and len(words) > 1:
            i = rng.randrange(1, len(words))
            s = " ".join(words[:i]) + " \t" + " ".join(words[i:])
        elif op == "newline" and len(words) > 1:
            i = rng.randrange(1, len(words))
            s = " ".join(words[:i]) + "\n" + " ".join(words[i:])
        elif op == "trail_punct":
            s = s.rstrip() + pick(rng, ("!", "?", "...", " .", "!!", ":)", "?!"))
        elif op == "drop_punct":
            s = re.sub(r"[.,!?;:]", "", s)
        elif op == "comma" and len(words) > 2:
            i = rng.randrange(1, len(words) - 1)
            words[i] = words[i] + ","
            s = " ".join(words)
        elif op == "lead_space":
            s = pick(rng, ("  ", "\t", " \n")) + s + pick(rng, (" ", "\t", "\n", ""))
    return s


_WORD = re.compile(r"^([^A-Za-z]*)([A-Za-z]+)([^A-Za-z]*)$")


def near_variant(rng: random.Random, rec: dict) -> dict | None:
    """1-3 word edits close together, in the instruction or the input.

    An edit substitutes a synonym, introduces a typo (two letters swapped), changes a digit,
    deletes a small word or inserts one.
    """
    n_edits = rng.choices((1, 2, 3), weights=(4, 3, 3))[0]
    r = rng.random()
    if r < 0.25:  # near the start of the instruction
        field = "instruction"
        tokens = rec[field].split(" ")
        start = rng.randrange(min(3, len(tokens)))
    else:
        field = "input" if rec["input"] and rng.random() < 0.7 else "instruction"
        tokens = rec[field].split(" ")
        if r < 0.65 and (field == "input" or not rec["input"]):  # near the end of the text
            start = max(0, len(tokens) - n_edits - rng.randint(0, 3))
        else:
            start = rng.randrange(len(tokens))
    done, pos = 0, start
    while done < n_edits and pos < len(tokens) and pos - start < 6:
        tok = tokens[pos]
        m = _WORD.match(tok)
        word = m.group(2) if m else ""
        ops = []
        if word.lower() in SYNONYMS:
            ops += ["sub"] * 3
        if len(word) >= 5:
            ops.append("typo")
        if any(ch.isdigit() for ch in tok):
            ops.append("digit")
        if word.lower() in DELETABLE and m.group(3) == "" and len(tokens) > 3:
            ops.append("del")
        if m and m.group(1) == "" and m.group(3) == "":
            ops.append("ins")
        if not ops:
            pos += 1
            continue
        op = pick(rng, ops)
        if op == "sub":
            new = SYNONYMS[word.lower()]
            new = new[0].upper() + new[1:] if word[0].isupper() else new
            tokens[pos] = m.group(1) + new + m.group(3)
        elif op == "typo":
            k = rng.randrange(1, len(word) - 2)
            w = word[:k] + word[k + 1] + word[k] + word[k + 2 :]
            if w.lower() == word.lower():
                pos += 1
                continue
            tokens[pos] = m.group(1) + w + m.group(3)
        elif op == "digit":
            ds = [k for k, ch in enumerate(tok) if ch.isdigit()]
            k = pick(rng, ds)
            tokens[pos] = tok[:k] + str((int(tok[k]) + rng.randint(1, 8)) % 10) + tok[k + 1 :]
        elif op == "del":
            del tokens[pos]
            done += 1
            continue
        else:
            tokens.insert(pos + 1, pick(rng, INSERT_WORDS))
            pos += 1
        done += 1
        pos += 1
    if not done:
        return None
    out = dict(rec)
    out[field] = " ".join(tokens)
    out["edits"] = done
    return out


BAD_MALFORMED = (
    b'{"instruction": "Explain how a refrigerator keeps food cold", "input": "", "outp',
    b'{"instruction": "List five rivers in South America.", "input": "", "output": "Amazon, Orinoco"} trailing garbage',
    b'["Write a haiku about fog.", "", ""]',
    b"42",
    b'{"instruction": "Name three noble gases", "input": "", "output": "Neon, argon, xenon"',
    b'{"instruction": "Describe a sunset" "input": "" "output": ""}',
)
BAD_EMPTY = (
    b'{"instruction": "", "input": "", "output": "An answer with no question."}',
    b'{"instruction": "   \\t  ", "input": "", "output": ""}',
    b'{"instruction": "\\n", "input": "", "output": "Nothing was asked."}',
)
BAD_ENCODING = (
    b'{"instruction": "Explain why the sky looks blue at noon \xff\xfe but red at sunset.", "input": "", "output": ""}',
    b'{"instruction": "Summarize the memo below for the night shift.", "input": "Caf\xe9 closes at 9 \x80 p.m. on weekdays.", "output": ""}',
    b'{"instruction": "Translate \xc3 \xe2\x82 the word cloud into Czech.", "input": "", "output": "mrak"}',
)
BAD_MISSING = (
    b'{"prompt": "What are the health benefits of green tea?", "output": "Antioxidants and a little caffeine."}',
    b'{"input": "The meeting moved to Friday.", "output": "Noted."}',
    b'{"question": "How many legs does a spider have?", "answer": "Eight."}',
)


def too_long_line() -> bytes:
    words = ("log", "entry", "status", "ok", "retry", "timeout", "worker", "queue", "batch", "flush")
    body, i = [], 0
    size = 0
    while size < TOO_LONG_CHARS:
        w = f"{words[i % len(words)]}{i}"
        body.append(w)
        size += len(w) + 1
        i += 1
    text = ("Summarize the following server log. " + " ".join(body))[:TOO_LONG_CHARS]
    return json.dumps({"instruction": text, "input": "", "output": ""}).encode()


# --------------------------------------------------------------------------------------------
# assembly


def _line(rec: dict) -> bytes:
    return json.dumps({"instruction": rec["instruction"], "input": rec["input"], "output": rec["output"]},
                      ensure_ascii=False).encode("utf-8")


def build(seed: int = SEED) -> tuple[bytes, dict]:
    rng = random.Random(seed)
    base = make_base(rng)
    keys = [dedup_key(r["instruction"], r["input"]) for r in base]
    all_keys = set(keys)

    # near duplicates: long originals, 1-3 word edits, similar but not the same key
    long_ids = [i for i, r in enumerate(base)
                if len((normalize(r["instruction"]) + " " + normalize(r["input"])).split()) >= NEAR_MIN_WORDS]
    rng.shuffle(long_ids)
    near: list[tuple[int, dict, float]] = []
    for i in long_ids:
        if len(near) >= N_NEAR:
            break
        best = None  # of a few variants similar enough, the one with the most edits
        for _ in range(8):
            v = near_variant(rng, base[i])
            if v is None:
                continue
            k = dedup_key(v["instruction"], v["input"])
            if k in all_keys:
                continue
            v["sets"] = shingle_sets(v["instruction"], v["input"])
            jac = min(jaccard(base[i]["sets"][f], v["sets"][f]) for f in ("word_plain", "word_template"))
            if jac >= NEAR_MIN_JACCARD and (best is None or v["edits"] > best[1]["edits"]):
                best = (i, v, jac)
        if best is not None:
            all_keys.add(dedup_key(best[1]["instruction"], best[1]["input"]))
            near.append(best)
    assert len(near) == N_NEAR, f"only {len(near)} near duplicates could be planted"
    near_src = {i for i, _, _ in near}
    # the planted pairs are the only similar ones among everything that survives exact dedup
    planted = {(i, len(base) + n) for n, (i, _, _) in enumerate(near)}
    for name in SIM_LIMITS:
        # (normal rows are already known to be further apart than that: only the near rows are probed)
        found = similar_pairs([r["sets"][name] for r in base] + [v["sets"][name] for _, v, _ in near], 0.75, len(base))
        assert {(i, j) for i, j, _ in found} <= planted, f"unplanted similar pair ({name})"

    # exact duplicates: any other record (a few are copied twice)
    pool = [i for i in range(len(base)) if i not in near_src]
    srcs = rng.sample(pool, N_EXACT - 10)
    srcs += rng.sample(srcs, 10)
    exact: list[tuple[int, dict]] = []
    for i in srcs:
        r = base[i]
        for _ in range(20):
            v = dict(r, instruction=exact_variant(rng, r["instruction"]), input=exact_variant(rng, r["input"]))
            if (v["instruction"], v["input"]) != (r["instruction"], r["input"]) and \
                    (v["instruction"], v["input"]) not in {(e["instruction"], e["input"]) for j, e in exact if j == i}:
                break
        assert dedup_key(v["instruction"], v["input"]) == keys[i]
        exact.append((i, v))

    # where each planted row goes: after a random base row at most 600 rows after its original
    n = len(base)
    after: dict[int, list[tuple[str, object]]] = {}
    for i, v, jac in near:
        after.setdefault(rng.randint(i, min(n - 1, i + 600)), []).append(("near", (i, v, jac)))
    for i, v in exact:
        after.setdefault(rng.randint(i, min(n - 1, i + 600)), []).append(("exact", (i, v)))
    bad = ([("malformed", b) for b in BAD_MALFORMED] + [("empty", b) for b in BAD_EMPTY]
           + [("bad_encoding", b) for b in BAD_ENCODING] + [("missing_field", b) for b in BAD_MISSING])
    for reason, b in bad:
        after.setdefault(rng.randint(0, n - 1), []).append(("bad", (reason, b)))
    after.setdefault(n // 2, []).append(("bad", ("too_long", too_long_line())))

    lines: list[bytes] = []
    base_line: dict[int, int] = {}
    near_pairs, exact_pairs, near_jac = [], [], []
    quarantine: dict[str, list[int]] = {r: [] for r in ("malformed", "empty", "too_long", "bad_encoding", "missing_field")}
    for i, r in enumerate(base):
        base_line[i] = len(lines)
        lines.append(_line(r))
        planted = after.get(i, [])
        rng.shuffle(planted)
        for kind, payload in planted:
            if kind == "near":
                src, v, jac = payload
                near_pairs.append([base_line[src], len(lines)])
                near_jac.append(round(jac, 4))
                lines.append(_line(v))
            elif kind == "exact":
                src, v = payload
                exact_pairs.append([base_line[src], len(lines)])
                lines.append(_line(v))
            else:
                reason, b = payload
                quarantine[reason].append(len(lines))
                lines.append(b)
    data = b"\n".join(lines) + b"\n"

    counts: dict[str, int] = {}
    for r in base:
        counts[r["task"]] = counts.get(r["task"], 0) + 1
    n_bad = sum(len(v) for v in quarantine.values())
    manifest = {
        "file": "sample.jsonl",
        "generator": "examples/make_sample.py",
        "seed": seed,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "total_lines": len(lines),
        "valid_unique": len(base),
        "exact_duplicates": len(exact_pairs),
        "near_duplicates": len(near_pairs),
        "quarantined": n_bad,
        "quarantined_by_reason": {k: len(v) for k, v in quarantine.items()},
        "bad_lines": quarantine,
        "expected_stats": {
            "exact_only": {"read": len(lines), "kept": len(base) + len(near_pairs), "exact_duplicates": len(exact_pairs),
                           "near_duplicates": 0, "quarantined": n_bad},
            "exact_and_near": {"read": len(lines), "kept": len(base), "exact_duplicates": len(exact_pairs),
                               "near_duplicates": len(near_pairs), "quarantined": n_bad},
        },
        "dedup_rule": "key = norm(instruction) + '\\n' + norm(input); norm = NFKC, casefold, drop Unicode "
                      "categories P* and S*, collapse whitespace runs to one space, strip",
        "near_duplicate_rule": (
            f"1-3 word edits (substitution, insertion, deletion) of an original of >= {NEAR_MIN_WORDS} words; "
            f"word {SHINGLE_WORDS}-gram Jaccard to the original >= {NEAR_MIN_JACCARD} on both renderings"),
        "similarity_renderings": {"plain": "norm(instruction) + ' ' + norm(input)",
                                  "template": "norm(paper template applied)"},
        "similarity_guarantee": (
            f"apart from the planted pairs, no two rows that survive exact dedup reach Jaccard 0.75 "
            f"(word {SHINGLE_WORDS}-grams or char {CHAR_SHINGLE}-grams, either rendering); normal rows stay below "
            f"{BASE_MAX_WORD_JACCARD} (word) and {BASE_MAX_CHAR_JACCARD} (char)"),
        "task_types": {t: counts.get(t, 0) for t in TASK_TYPES},
        "exact_duplicate_pairs": exact_pairs,
        "near_duplicate_pairs": near_pairs,
        "near_duplicate_jaccard": near_jac,
    }
    return data, manifest


def write_sample(out_dir: Path | str = HERE, seed: int = SEED) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, manifest = build(seed)
    rest = manifest["bytes"] - len(too_long_line()) - 1
    assert rest <= MAX_REST_BYTES, f"sample too large: {rest} bytes besides the long line"
    (out_dir / "sample.jsonl").write_bytes(data)
    text = json.dumps(manifest, indent=1, ensure_ascii=False)
    # lists of numbers on one line each
    text = re.sub(r"\[\s*(-?[\d.]+(?:,\s*-?[\d.]+)*)\s*\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)
    (out_dir / "sample_manifest.json").write_text(text + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", default=str(HERE), help="where to write sample.jsonl and sample_manifest.json")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    m = write_sample(args.out_dir, args.seed)
    print(json.dumps({k: m[k] for k in ("bytes", "total_lines", "valid_unique", "exact_duplicates",
                                        "near_duplicates", "quarantined_by_reason")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
