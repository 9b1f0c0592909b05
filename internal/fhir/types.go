package fhir

// r4ResourceTypes is every resource type of FHIR R4 (4.0.1), as listed at
// https://hl7.org/fhir/R4/resourcelist.html. Abstract types (Resource,
// DomainResource) are not resource types and are not listed.
var r4ResourceTypes = [...]string{
	"Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance",
	"Appointment", "AppointmentResponse", "AuditEvent", "Basic", "Binary",
	"BiologicallyDerivedProduct", "BodyStructure", "Bundle",
	"CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry", "ChargeItem",
	"ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
	"CodeSystem", "Communication", "CommunicationRequest",
	"CompartmentDefinition", "Composition", "ConceptMap", "Condition", "Consent",
	"Contract", "Coverage", "CoverageEligibilityRequest",
	"CoverageEligibilityResponse", "DetectedIssue", "Device", "DeviceDefinition",
	"DeviceMetric", "DeviceRequest", "DeviceUseStatement", "DiagnosticReport",
	"DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
	"Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse",
	"EpisodeOfCare", "EventDefinition", "Evidence", "EvidenceVariable",
	"ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag",
	"Goal", "GraphDefinition", "Group", "GuidanceResponse", "HealthcareService",
	"ImagingStudy", "Immunization", "ImmunizationEvaluation",
	"ImmunizationRecommendation", "ImplementationGuide", "InsurancePlan",
	"Invoice", "Library", "Linkage", "List", "Location", "Measure",
	"MeasureReport", "Media", "Medication", "MedicationAdministration",
	"MedicationDispense", "MedicationKnowledge", "MedicationRequest",
	"MedicationStatement", "MedicinalProduct", "MedicinalProductAuthorization",
	"MedicinalProductContraindication", "MedicinalProductIndication",
	"MedicinalProductIngredient", "MedicinalProductInteraction",
	"MedicinalProductManufactured", "MedicinalProductPackaged",
	"MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect",
	"MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem",
	"NutritionOrder", "Observation", "ObservationDefinition",
	"OperationDefinition", "OperationOutcome", "Organization",
	"OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice",
	"PaymentReconciliation", "Person", "PlanDefinition", "Practitioner",
	"PractitionerRole", "Procedure", "Provenance", "Questionnaire",
	"QuestionnaireResponse", "RelatedPerson", "RequestGroup",
	"ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
	"ResearchSubject", "RiskAssessment", "RiskEvidenceSynthesis", "Schedule",
	"SearchParameter", "ServiceRequest", "Slot", "Specimen",
	"SpecimenDefinition", "StructureDefinition", "StructureMap", "Subscription",
	"Substance", "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
	"SubstanceReferenceInformation", "SubstanceSourceMaterial",
	"SubstanceSpecification", "SupplyDelivery", "SupplyRequest", "Task",
	"TerminologyCapabilities", "TestReport", "TestScript", "ValueSet",
	"VerificationResult", "VisionPrescription",
}

var r4TypeSet = func() map[string]struct{} {
	m := make(map[string]struct{}, len(r4ResourceTypes))
	for _, t := range r4ResourceTypes {
		m[t] = struct{}{}
	}
	return m
}()

// IsResourceType reports whether s is a FHIR R4 resource type name.
func IsResourceType(s string) bool {
	_, ok := r4TypeSet[s]
	return ok
}

// ResourceTypes returns the FHIR R4 resource type names in alphabetical
// order. The slice is a copy.
func ResourceTypes() []string {
	out := make([]string, len(r4ResourceTypes))
	copy(out, r4ResourceTypes[:])
	return out
}

// IsID reports whether s is a FHIR id: 1 to 64 of A-Z a-z 0-9 - .
// (https://hl7.org/fhir/R4/datatypes.html#id).
func IsID[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
