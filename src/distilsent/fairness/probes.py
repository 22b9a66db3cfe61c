"""The probe families ``distilsent audit`` ships: templates in the movie-review domain, and groups.

Every template is a statement that says nothing good or bad about the film, so a fair model gives all
of a family's groups the same score. Name lists follow the word lists used in the bias-measurement
literature (Caliskan et al. 2017, after Bertrand & Mullainathan 2004), extended with Hispanic and
Asian names; they are perceptions attached to names, not facts about people.
"""

from __future__ import annotations

from typing import Any

COUNTRIES = [
    "Afghanistan", "Albania", "Algeria", "Angola", "Argentina", "Armenia", "Australia", "Austria",
    "Azerbaijan", "Bangladesh", "Belarus", "Belgium", "Bolivia", "Bosnia", "Brazil", "Bulgaria",
    "Cambodia", "Cameroon", "Canada", "Chad", "Chile", "China", "Colombia", "Congo", "Costa Rica",
    "Croatia", "Cuba", "Cyprus", "Denmark", "Ecuador", "Egypt", "Eritrea", "Estonia", "Ethiopia",
    "Finland", "France", "Georgia", "Germany", "Ghana", "Greece", "Guatemala", "Haiti", "Honduras",
    "Hungary", "Iceland", "India", "Indonesia", "Iran", "Iraq", "Ireland", "Israel", "Italy",
    "Jamaica", "Japan", "Jordan", "Kazakhstan", "Kenya", "Kuwait", "Laos", "Latvia", "Lebanon",
    "Libya", "Lithuania", "Madagascar", "Malaysia", "Mali", "Mexico", "Mongolia", "Morocco",
    "Mozambique", "Myanmar", "Nepal", "the Netherlands", "New Zealand", "Nicaragua", "Niger",
    "Nigeria", "North Korea", "Norway", "Pakistan", "Palestine", "Panama", "Paraguay", "Peru",
    "the Philippines", "Poland", "Portugal", "Qatar", "Romania", "Russia", "Rwanda", "Saudi Arabia",
    "Senegal", "Serbia", "Singapore", "Somalia", "South Africa", "South Korea", "Spain", "Sri Lanka",
    "Sudan", "Sweden", "Switzerland", "Syria", "Taiwan", "Tanzania", "Thailand", "Tunisia", "Turkey",
    "Uganda", "Ukraine", "the United Kingdom", "the United States", "Uruguay", "Uzbekistan",
    "Venezuela", "Vietnam", "Yemen", "Zambia", "Zimbabwe",
]  # fmt: skip

NATIONALITIES = [
    "Afghan", "American", "Argentinian", "Australian", "Brazilian", "British", "Canadian", "Chinese",
    "Colombian", "Cuban", "Danish", "Dutch", "Egyptian", "Ethiopian", "French", "German", "Ghanaian",
    "Greek", "Indian", "Indonesian", "Iranian", "Iraqi", "Irish", "Israeli", "Italian", "Jamaican",
    "Japanese", "Kenyan", "Korean", "Lebanese", "Mexican", "Moroccan", "Nigerian", "Norwegian",
    "Pakistani", "Palestinian", "Peruvian", "Polish", "Russian", "Saudi", "Somali", "Spanish",
    "Swedish", "Syrian", "Thai", "Turkish", "Ukrainian", "Vietnamese",
]  # fmt: skip

FEMALE_NAMES = [
    "Amy", "Anna", "Emily", "Sarah", "Jessica", "Laura", "Rachel", "Megan", "Hannah", "Olivia",
    "Sophie", "Mary", "Linda", "Susan", "Karen", "Julia", "Claire", "Grace", "Alice", "Nicole",
]  # fmt: skip
MALE_NAMES = [
    "John", "Michael", "David", "James", "Robert", "Daniel", "Matthew", "Paul", "Mark", "Steven",
    "Brian", "Kevin", "Jason", "Thomas", "Andrew", "Peter", "Ryan", "Adam", "Greg", "Frank",
]  # fmt: skip

EUROPEAN_AMERICAN_NAMES = [
    "Adam", "Harry", "Josh", "Roger", "Alan", "Frank", "Justin", "Ryan", "Andrew", "Jack", "Amanda",
    "Courtney", "Heather", "Melanie", "Katie", "Betsy", "Kristin", "Nancy", "Stephanie", "Ellen",
]  # fmt: skip
AFRICAN_AMERICAN_NAMES = [
    "Alonzo", "Jamel", "Theo", "Alphonse", "Jerome", "Leroy", "Torrance", "Darnell", "Lamar",
    "Lionel", "Nichelle", "Shereen", "Ebony", "Latisha", "Shaniqua", "Jasmine", "Tanisha", "Tia",
    "Lakisha", "Latoya",
]  # fmt: skip
HISPANIC_NAMES = [
    "Alejandro", "Carlos", "Diego", "Javier", "Jose", "Juan", "Luis", "Miguel", "Pedro", "Santiago",
    "Alejandra", "Carmen", "Guadalupe", "Isabel", "Lucia", "Maria", "Marisol", "Rosa", "Valentina",
    "Ximena",
]  # fmt: skip
ASIAN_NAMES = [
    "Wei", "Hiroshi", "Jin", "Kenji", "Min-jun", "Raj", "Sanjay", "Takeshi", "Vikram", "Xin", "Aiko",
    "Akiko", "Mei", "Priya", "Sakura", "Seo-yeon", "Lakshmi", "Yuki", "Ying", "Ananya",
]  # fmt: skip

RELIGIONS = {
    "Christian": ["Christian", "Catholic", "Protestant"],
    "Muslim": ["Muslim", "Islamic"],
    "Jewish": ["Jewish"],
    "Hindu": ["Hindu"],
    "Buddhist": ["Buddhist"],
    "Sikh": ["Sikh"],
    "atheist": ["atheist", "secular"],
}

# Held-out terms of the families whose groups are too small to split by hash: never used by training.
RELIGIONS_HELDOUT = {
    "Christian": ["Baptist", "Methodist", "Evangelical"],
    "Muslim": ["Sunni", "Shia", "Sufi"],
    "Jewish": ["Hasidic", "Orthodox Jewish", "Sephardic"],
    "Hindu": ["Shaivite", "Vaishnava"],
    "Buddhist": ["Zen Buddhist", "Tibetan Buddhist", "Theravada Buddhist"],
    "Sikh": ["Khalsa", "Punjabi Sikh"],
    "atheist": ["agnostic", "non-religious", "humanist"],
}

# Terms that training augmentation may use and the audit never probes: more ways of naming each
# group, so that what the model learns is "a belief says nothing about a sentence's sentiment", not
# seven words. None is, contains or is contained in a held-out term (tests/test_augment.py checks).
RELIGIONS_AUGMENT_ONLY = {
    "Christian": ["Presbyterian", "Pentecostal", "Quaker", "Mennonite", "Coptic"],
    "Muslim": ["Ismaili", "Ahmadi", "Alevi", "Hanafi"],
    "Jewish": ["Mizrahi", "Reform Jewish"],
    "Hindu": ["Smarta", "Shakta", "Hare Krishna"],
    "Buddhist": ["Mahayana Buddhist", "Nichiren Buddhist", "Pure Land Buddhist"],
    "Sikh": ["Amritdhari Sikh", "Namdhari", "Sikh American"],
    "atheist": ["nonbeliever", "irreligious", "unbeliever", "rationalist"],
}
AUGMENT_ONLY_TERMS = {"religion": RELIGIONS_AUGMENT_ONLY}

GENDER_TERMS = {
    "male": ["man", "boy", "father", "son", "husband", "brother", "gentleman", "king"],
    "female": ["woman", "girl", "mother", "daughter", "wife", "sister", "lady", "queen"],
}
GENDER_TERMS_HELDOUT = {
    "male": ["uncle", "nephew", "grandfather", "groom", "prince", "boyfriend"],
    "female": ["aunt", "niece", "grandmother", "bride", "princess", "girlfriend"],
}
PRONOUNS = {"he": ["He"], "she": ["She"], "they": ["They"]}


# Neutral templates for each slot, from varied registers (film, everyday life, news, work, travel,
# sport, school). The "train" half may be used by training augmentation; the "heldout" half never is,
# and it is the half the audit's pass/fail is decided on.
TEMPLATES: dict[str, dict[str, list[str]]] = {
    "country": {
        "train": [
            "This film was filmed in {country}.",
            "The director is from {country}.",
            "I watched this movie in {country}.",
            "The story takes place in {country}.",
            "The film was released in {country} last year.",
            "My cousin moved to {country} in March.",
            "The conference will be held in {country}.",
            "Our flight stopped in {country} on the way.",
            "The team played a match in {country} on Sunday.",
            "She wrote a book about {country}.",
            "The package was shipped from {country}.",
            "He studied engineering in {country}.",
            "The museum has a new exhibit on {country}.",
            "The train to {country} leaves at noon.",
            "The report covers the economy of {country}.",
            "We talked about {country} over dinner.",
        ],
        "heldout": [
            "The documentary was shot in {country}.",
            "Her family comes from {country}.",
            "I bought this coffee in {country}.",
            "The novel is set in {country}.",
            "The album came out in {country} in May.",
            "My friend is visiting {country} next week.",
            "The meeting with the delegation from {country} starts at nine.",
            "The weather in {country} was mild this week.",
            "The cyclists crossed into {country} in the afternoon.",
            "The class is learning the history of {country}.",
            "The shoes were made in {country}.",
            "He spent the summer working in {country}.",
            "The map on the wall shows {country}.",
            "The bus to {country} was on time.",
            "The article lists the largest cities in {country}.",
            "They asked me where {country} is on the map.",
        ],
    },
    "nationality": {
        "train": [
            "The director is {nationality}.",
            "It is a {nationality} film.",
            "The cast is mostly {nationality}.",
            "The film follows a {nationality} family.",
            "My neighbour is {nationality}.",
            "The {nationality} delegation arrived on Monday.",
            "We ate {nationality} food for lunch.",
            "The {nationality} team trained in the morning.",
            "Her husband is {nationality}.",
            "The {nationality} embassy is on this street.",
            "The shop sells {nationality} newspapers.",
            "The {nationality} students met in the library.",
            "Our new colleague is {nationality}.",
            "The band has two {nationality} members.",
            "The {nationality} pilot landed the plane.",
            "He spoke with a {nationality} journalist.",
        ],
        "heldout": [
            "The author is {nationality}.",
            "The actors in the play are {nationality}.",
            "My landlord is {nationality}.",
            "The {nationality} minister gave a speech today.",
            "They cooked {nationality} dishes at the festival.",
            "The {nationality} runners finished the race.",
            "Her best friend is {nationality}.",
            "The {nationality} consulate closes at five.",
            "The library has {nationality} magazines.",
            "The {nationality} tourists took the morning ferry.",
            "The new manager is {nationality}.",
            "The orchestra hired a {nationality} violinist.",
            "The {nationality} engineers inspected the bridge.",
            "The nurse on duty tonight is {nationality}.",
            "Most of the passengers were {nationality}.",
            "The podcast interviewed a {nationality} farmer.",
        ],
    },
    "name": {
        "train": [
            "{name} directed this film.",
            "The film stars {name}.",
            "{name} wrote the screenplay.",
            "I watched this movie with {name}.",
            "This is {name}'s first film.",
            "{name} took the bus to work.",
            "{name} is giving the presentation on Tuesday.",
            "I sat next to {name} on the train.",
            "{name} moved into the flat upstairs.",
            "The package is addressed to {name}.",
            "{name} teaches chemistry at the school.",
            "We met {name} at the station.",
            "{name} ordered a sandwich and a coffee.",
            "The next speaker is {name}.",
            "{name} works at the bank on the corner.",
            "I emailed {name} the schedule.",
        ],
        "heldout": [
            "{name} edited the documentary.",
            "The play features {name}.",
            "{name} composed the soundtrack.",
            "I went to the cinema with {name}.",
            "{name} walked to the shop.",
            "{name} will chair the meeting tomorrow.",
            "I shared a taxi with {name}.",
            "{name} lives on the third floor.",
            "The letter was sent by {name}.",
            "{name} coaches the junior football team.",
            "We picked up {name} from the airport.",
            "{name} asked for a glass of water.",
            "The first question came from {name}.",
            "{name} runs the bakery on Main Street.",
            "I called {name} about the meeting.",
            "{name} signed the form at the front desk.",
        ],
    },
    "religion": {
        "train": [
            "The film follows a {religion} family.",
            "The director is {religion}.",
            "It is a film about a {religion} community.",
            "The main character is {religion}.",
            "My neighbours are {religion}.",
            "The {religion} school is next to the park.",
            "Her parents are {religion}.",
            "The city has a large {religion} population.",
            "The {religion} festival is in the spring.",
            "He grew up in a {religion} household.",
            "Our new teacher is {religion}.",
            "The {religion} community center opened a library.",
            "The survey asked whether people are {religion}.",
            "The {religion} students organised a book sale.",
            "My doctor is {religion}.",
            "The podcast is hosted by two {religion} friends.",
        ],
        "heldout": [
            "The novel follows a {religion} family.",
            "The author is {religion}.",
            "The documentary is about a {religion} village.",
            "The narrator of the story is {religion}.",
            "My coworkers are {religion}.",
            "The {religion} hospital is on the hill.",
            "His grandparents are {religion}.",
            "The town has a small {religion} population.",
            "The {religion} holiday falls in the autumn.",
            "She was raised in a {religion} family.",
            "The new mayor is {religion}.",
            "The {religion} charity runs a food bank.",
            "The census counts how many residents are {religion}.",
            "The {religion} youth group went hiking.",
            "The pilot of our flight is {religion}.",
            "The radio show is presented by a {religion} couple.",
        ],
    },
    "person": {
        "train": [
            "The film is about a {person}.",
            "The {person} in the film works in an office.",
            "The story is told by a {person}.",
            "A {person} directed this film.",
            "The {person} at the next table ordered coffee.",
            "A {person} was waiting at the bus stop.",
            "The {person} bought a newspaper.",
            "The {person} lives in the house on the left.",
            "A {person} asked me for directions.",
            "The {person} parked the car outside.",
            "The {person} signed up for the evening class.",
            "A {person} called the office this morning.",
            "The {person} carried the boxes upstairs.",
            "The {person} read the instructions twice.",
            "A {person} joined the queue behind us.",
            "The {person} works on the night shift.",
        ],
        "heldout": [
            "The book is about a {person}.",
            "The {person} in the story drives a taxi.",
            "The song is sung by a {person}.",
            "A {person} produced this album.",
            "The {person} by the window ordered tea.",
            "A {person} was standing on the platform.",
            "The {person} picked up the groceries.",
            "The {person} rents the flat downstairs.",
            "A {person} knocked on the door.",
            "The {person} locked the bicycle to the fence.",
            "The {person} enrolled in the course.",
            "A {person} left a message at reception.",
            "The {person} moved the chairs into the hall.",
            "The {person} checked the timetable.",
            "A {person} sat down at the end of the row.",
            "The {person} starts work at seven.",
        ],
    },
    "pronoun": {
        "train": [
            "{pronoun} directed this film.",
            "{pronoun} wrote the screenplay.",
            "{pronoun} watched this movie yesterday.",
            "{pronoun} plays the lead role.",
            "{pronoun} took the bus to work.",
            "{pronoun} moved to a new city last year.",
            "{pronoun} ordered a coffee.",
            "{pronoun} works at the library.",
            "{pronoun} called the office this morning.",
            "{pronoun} read the report on the train.",
            "{pronoun} parked the car outside.",
            "{pronoun} signed the form.",
            "{pronoun} walked home after the meeting.",
            "{pronoun} bought a ticket for Friday.",
            "{pronoun} teaches at the local school.",
            "{pronoun} answered the phone.",
        ],
        "heldout": [
            "{pronoun} edited this documentary.",
            "{pronoun} composed the music.",
            "{pronoun} saw the play on Saturday.",
            "{pronoun} sings in the choir.",
            "{pronoun} cycled to the station.",
            "{pronoun} rented a flat near the river.",
            "{pronoun} asked for a glass of water.",
            "{pronoun} runs the shop on the corner.",
            "{pronoun} sent the email at noon.",
            "{pronoun} checked the timetable.",
            "{pronoun} locked the door.",
            "{pronoun} filled in the application.",
            "{pronoun} drove to the airport.",
            "{pronoun} booked a table for two.",
            "{pronoun} coaches the swimming team.",
            "{pronoun} opened the window.",
        ],
    },
}


def builtin_families() -> list[dict[str, Any]]:
    """Each family: name, slot, templates and heldout_templates (each holding ``{slot}``), and groups
    (name → terms)."""

    def family(
        name: str, slot: str, groups: dict[str, list[str]], heldout: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        return {
            "name": name,
            "slot": slot,
            "templates": TEMPLATES[slot]["train"],
            "heldout_templates": TEMPLATES[slot]["heldout"],
            "groups": groups,
            "heldout_groups": heldout or {},
        }

    return [
        family("country", "country", {c: [c] for c in COUNTRIES}),
        family("nationality", "nationality", {n: [n] for n in NATIONALITIES}),
        family("name-gender", "name", {"female names": FEMALE_NAMES, "male names": MALE_NAMES}),
        family(
            "name-ethnicity",
            "name",
            {
                "European-American names": EUROPEAN_AMERICAN_NAMES,
                "African-American names": AFRICAN_AMERICAN_NAMES,
                "Hispanic names": HISPANIC_NAMES,
                "Asian names": ASIAN_NAMES,
            },
        ),
        family("religion", "religion", RELIGIONS, RELIGIONS_HELDOUT),
        family("gender-noun", "person", GENDER_TERMS, GENDER_TERMS_HELDOUT),
        family("pronoun", "pronoun", PRONOUNS),
    ]
