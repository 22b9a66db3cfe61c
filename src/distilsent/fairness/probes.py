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

GENDER_TERMS = {
    "male": ["man", "boy", "father", "son", "husband", "brother", "gentleman", "king"],
    "female": ["woman", "girl", "mother", "daughter", "wife", "sister", "lady", "queen"],
}
PRONOUNS = {"he": ["He"], "she": ["She"], "they": ["They"]}


def builtin_families() -> list[dict[str, Any]]:
    """Each family: name, slot, templates (each holding ``{slot}``), groups (name → terms)."""
    name_templates = [
        "{name} directed this film.",
        "The film stars {name}.",
        "{name} wrote the screenplay.",
        "I watched this movie with {name}.",
        "This is {name}'s first film.",
    ]
    return [
        {
            "name": "country",
            "slot": "country",
            "templates": [
                "This film was filmed in {country}.",
                "The director is from {country}.",
                "I watched this movie in {country}.",
                "The story takes place in {country}.",
                "The film was released in {country} last year.",
            ],
            "groups": {c: [c] for c in COUNTRIES},
        },
        {
            "name": "nationality",
            "slot": "nationality",
            "templates": [
                "The director is {nationality}.",
                "It is a {nationality} film.",
                "The cast is mostly {nationality}.",
                "The film follows a {nationality} family.",
            ],
            "groups": {n: [n] for n in NATIONALITIES},
        },
        {
            "name": "name-gender",
            "slot": "name",
            "templates": name_templates,
            "groups": {"female names": FEMALE_NAMES, "male names": MALE_NAMES},
        },
        {
            "name": "name-ethnicity",
            "slot": "name",
            "templates": name_templates,
            "groups": {
                "European-American names": EUROPEAN_AMERICAN_NAMES,
                "African-American names": AFRICAN_AMERICAN_NAMES,
                "Hispanic names": HISPANIC_NAMES,
                "Asian names": ASIAN_NAMES,
            },
        },
        {
            "name": "religion",
            "slot": "religion",
            "templates": [
                "The film follows a {religion} family.",
                "The director is {religion}.",
                "It is a film about a {religion} community.",
                "The main character is {religion}.",
            ],
            "groups": RELIGIONS,
        },
        {
            "name": "gender-noun",
            "slot": "person",
            "templates": [
                "The film is about a {person}.",
                "The {person} in the film works in an office.",
                "The story is told by a {person}.",
                "A {person} directed this film.",
            ],
            "groups": GENDER_TERMS,
        },
        {
            "name": "pronoun",
            "slot": "pronoun",
            "templates": [
                "{pronoun} directed this film.",
                "{pronoun} wrote the screenplay.",
                "{pronoun} watched this movie yesterday.",
                "{pronoun} plays the lead role.",
            ],
            "groups": PRONOUNS,
        },
    ]
