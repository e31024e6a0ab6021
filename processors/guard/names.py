"""Common given names from many cultures, for the given-name PERSON recognizer.

The small spaCy model recognises Anglo names far better than others. A
capitalised word from this list followed by a capitalised surname is a strong
sign of a person in any language, so guard reports it too. Given names that
are also everyday English words (Will, May, Grace, Bill, Rose, ...) are left
out on purpose: they are for the NER model and the cue recognizer to judge in
context.
"""

from __future__ import annotations

_NAMES = """
# English, Irish, Scottish, Welsh
James John Robert Michael David Richard Joseph Thomas Charles Christopher Daniel Matthew
Anthony Andrew Joshua Kevin Brian George Edward Ronald Timothy Jason Jeffrey Ryan Jacob
Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel Gregory
Alexander Patrick Jack Dennis Jerry Tyler Aaron Henry Douglas Peter Adam Nathan Zachary
Kyle Noah Ethan Jeremy Christian Sean Liam Oliver Harry Oscar Callum Connor Declan Niamh
Siobhan Aoife Ciaran Eoin Fiona Mairi Angus Rhys Gareth Sian Cerys Dylan
Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Nancy Lisa Betty
Margaret Sandra Ashley Kimberly Emily Donna Michelle Dorothy Carol Amanda Melissa Deborah
Stephanie Rebecca Sharon Laura Cynthia Kathleen Amy Shirley Angela Helen Anna Brenda Pamela
Nicole Emma Samantha Katherine Christine Debra Rachel Catherine Carolyn Janet Maria Heather
Diane Julie Joyce Victoria Kelly Christina Lauren Joan Evelyn Olivia Judith Megan Cheryl
Martha Andrea Frances Hannah Jacqueline Gloria Teresa Kathryn Sara Janice Jean Alice
Madison Doris Abigail Julia Judy Sophia Isabella Charlotte Amelia Harper Ella Chloe Lucy
# popular in the US in recent decades (none is also an everyday English word)
Caleb Owen Wyatt Isaac Mason Logan Elijah Aiden Jayden Landon Levi Isaiah Gavin Evan Eli
Colton Brody Jaxon Ezra Nolan Julian Xavier Dominic Adrian Connor Brayden Cameron Carter
Scarlett Natalie Zoey Addison Aubrey Layla Nora Hailey Kaylee Leah Allison Gabriella
Stella Lillian Claire Skylar Paisley Everly Naomi Aaliyah Mackenzie Peyton Brianna Kayla
# Spanish, Portuguese, Latin American
Jose Juan Luis Carlos Javier Miguel Alejandro Diego Pablo Sergio Fernando Jorge Alberto
Manuel Francisco Antonio Rafael Andres Santiago Mateo Joao Pedro Thiago Gabriel Rodrigo
Lucas Matheus Gustavo Felipe Ricardo Eduardo Raul Ramon Enrique Ignacio Alvaro Hugo
Lucia Sofia Valentina Camila Isabel Carmen Elena Paula Ana Marta Laura Daniela Gabriela
Mariana Fernanda Beatriz Leticia Juliana Adriana Alejandra Ximena Rocio Pilar Ines
Guadalupe Veronica Patricia Claudia Natalia Catalina Renata Larissa Thais Luana
# German, Dutch, Scandinavian, Finnish
Klaus Hans Jurgen Wolfgang Stefan Andreas Markus Tobias Florian Sebastian Lukas Jonas
Maximilian Felix Moritz Leon Niklas Johannes Matthias Dieter Helmut Uwe Anja Katrin Sabine
Petra Ursula Monika Birgit Heike Claudia Silke Julia Lena Leonie Hannah Johanna Greta Frieda
Pieter Jan Sander Bram Daan Thijs Joris Sanne Femke Anouk Lotte Ingrid Lars Erik Anders
Nils Sven Magnus Olof Henrik Bjorn Astrid Sigrid Freya Ingrid Karin Annika Elin Maja Linnea
Mikko Juha Jukka Antti Aino Eino Sanna Tuula Kaisa
# French, Italian, Greek
Jean Pierre Jacques Michel Philippe Alain Nicolas Julien Mathieu Antoine Louis Baptiste
Etienne Francois Guillaume Olivier Thierry Camille Chloe Manon Amelie Juliette Margaux
Celine Sylvie Nathalie Isabelle Brigitte Aurelie Elodie Luca Marco Matteo Giuseppe
Giovanni Francesco Alessandro Lorenzo Andrea Davide Simone Riccardo Stefano Paolo Giulia
Chiara Francesca Sara Alessia Martina Federica Valentina Elisa Giorgia Silvia Nikos
Giorgos Dimitris Yannis Kostas Eleni Katerina Maria Sofia Despina Vasiliki
# Polish, Czech, Russian, Ukrainian, Balkan
Katarzyna Agnieszka Malgorzata Magdalena Joanna Ewa Zofia Piotr Krzysztof Tomasz Pawel
Marcin Michal Jakub Wojciech Lukasz Dmitri Dmitry Sergei Sergey Alexei Alexey Ivan Mikhail
Nikolai Vladimir Andrei Yuri Olga Tatiana Natalia Svetlana Irina Ekaterina Anastasia Elena
Oksana Olena Taras Bohdan Mykola Petro Vasyl Jiri Petr Tomas Lucie Tereza Milos Dragan
Jelena Ivana Marija Nikola
# Chinese, Japanese, Korean, Vietnamese, Southeast Asian
Wei Jie Hao Jun Lei Ming Tao Xin Yan Ying Hui Jing Li Mei Xiu Fang Lan Qiang Yong
Kenji Hiroshi Takashi Satoshi Haruto Yuto Sota Yuki Hana Yui Aoi Sakura Haruka Akiko Keiko
Naoko Kaori Ryo Daiki Kazuki Min-jun Seo-jun Ji-ho Ji-woo Seo-yeon Ha-eun Ji-yeon Soo-jin
Hyun-woo Jae-won Eun-ji Min-seo Dong-hyun Nguyen Minh Thanh Huong Linh Trang Anh Duc Tuan
Hoang Thu Lan Somchai Siriporn Arjun Putu Wayan Budi Siti Dewi Agus Rizal
# South Asian
Priya Rahul Amit Ananya Aarav Vivaan Aditya Arjun Rohan Vikram Sanjay Rajesh Suresh Ramesh
Anil Sunil Deepak Pooja Neha Kavya Divya Shreya Sneha Lakshmi Meera Anjali Aishwarya Ravi
Karthik Imran Faisal Bilal Ayesha Sana Zainab Hira Farhan Tahir Nusrat Rashed Tanvir
# Arabic, Persian, Turkish, Hebrew
Ahmed Mohammed Muhammad Mohamed Omar Ali Hassan Hussein Khalid Youssef Yusuf Ibrahim Mustafa
Karim Tariq Samir Nabil Rami Fatima Aisha Layla Leila Mariam Maryam Noor Nour Salma Yasmin
Huda Rania Amira Reza Ali Mehdi Hossein Arash Dariush Parisa Shirin Niloufar Elif Zeynep
Emre Burak Mehmet Cem Ayse Fatma Ozlem Deniz Noa Yael Tamar Avi Yossi Eitan Moshe Shira
Noam Itai
# African
Chinedu Chiamaka Emeka Obinna Ngozi Adaeze Oluwaseun Olumide Tunde Ayodele Folake Aisha
Abubakar Musa Hauwa Kwame Kofi Kwabena Ama Akosua Abena Yaw Wanjiru Wanjiku Njeri Kamau
Otieno Akinyi Achieng Thabo Sipho Themba Lerato Naledi Zanele Nomvula Tendai Tariro Chipo
Amara Fatoumata Moussa Mamadou Aminata Ousmane Seydou Abebe Tesfaye Almaz Selam
"""

GIVEN_NAMES: frozenset[str] = frozenset(
    word for line in _NAMES.splitlines() if not line.startswith("#") for word in line.split()
)
